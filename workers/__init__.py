"""The worker: a supervisor process and a pool of task-running processes."""
