"""What an application imports: ``@task``, ``delay``/``send_with_options``, and tasks' own options."""

import datetime
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from rabbitry import ConfigurationError, DuplicateTask, MessageError, Task, task
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.producers import default as default_submitter
from tests.helpers import REPOSITORY, drain, wait_until

API_TASKS = ("--tasks", "tests.api_tasks")


def dead_letter_count(connection, queue: str) -> int:
    state = connection.queue_state(dead_letter_queue_name(queue))
    return 0 if state is None else state.messages


def dead_letters(connection, queue: str, count: int) -> list:
    """Wait for ``count`` dead letters of ``queue``, then take (and ack) them."""
    name = dead_letter_queue_name(queue)
    wait_until(lambda: dead_letter_count(connection, queue) >= count, message=f"{count} dead letter(s)")
    letters = []
    while (letter := connection.get(name)) is not None:
        connection.ack(letter.delivery_tag)
        letters.append(letter)
    return letters


# -- the task object ----------------------------------------------------------------


def test_calling_a_task_runs_the_function_here(unique_name):
    @task(name=unique_name)
    def add(a, b=1):
        """Add two numbers."""
        return a + b

    assert isinstance(add, Task)
    assert add(2, b=3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."


def test_a_wrong_call_fails_at_the_caller_and_sends_nothing(unique_name, work_queue_name, connection):
    @task(name=unique_name, queue=work_queue_name)
    def resize(path: str, width: int = 800):
        pass

    for args, kwargs, problem in [
        ((), {}, "missing a required argument: 'path'"),
        (("a.png", 1, 2), {}, "too many positional arguments"),
        (("a.png",), {"height": 3}, "unexpected keyword argument 'height'"),
    ]:
        with pytest.raises(TypeError, match=problem) as raised:
            resize.delay(*args, **kwargs)
        assert str(raised.value).startswith(f"{unique_name}(path: str, width: int = 800): ")
    with pytest.raises(TypeError):
        resize.send_with_options(args=["a.png"], kwargs={"height": 3})
    with pytest.raises(MessageError, match="not JSON"):
        resize.delay(object())
    with pytest.raises(MessageError, match="task id"):
        resize.send_with_options(args=["a.png"], task_id="x" * 256)
    with pytest.raises(ConfigurationError, match="queue name"):
        resize.send_with_options(args=["a.png"], queue="x" * 256)
    assert connection.queue_state(work_queue_name) is None  # nothing was even declared


def test_threads_share_the_default_submitter_and_every_task_is_queued_once(
    unique_name, work_queue_name, connection, broker_url, monkeypatch, request
):
    monkeypatch.setenv("AMQP_URL", broker_url)
    request.addfinalizer(default_submitter.close)

    @task(name=unique_name, queue=work_queue_name)
    def count(n: int):
        pass

    ids = []
    threads = [threading.Thread(target=lambda n=n: ids.append(count.delay(n))) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(ids)) == 40
    assert connection.queue_state(work_queue_name).messages == 40  # each confirmed before delay returned
    queued = [json.loads(delivery.body)["args"] for delivery in drain(connection, work_queue_name)]
    assert sorted(queued) == [[n] for n in range(40)]


def test_instrument_counts_what_delay_submits_on_the_applications_registry(
    unique_name, work_queue_name, broker_url, monkeypatch, request
):
    from prometheus_client import CollectorRegistry

    import rabbitry

    monkeypatch.setenv("AMQP_URL", broker_url)
    monkeypatch.setattr("rabbitry.producers.default._metrics", None)  # later tests' submitters count nowhere
    request.addfinalizer(default_submitter.close)

    @task(name=unique_name, queue=work_queue_name)
    def count(n: int):
        pass

    count.delay(0)  # a submitter opened before instrument() is counted from then on too
    registry = CollectorRegistry()
    rabbitry.instrument(registry)
    for n in range(5):
        count.delay(n)

    labels = {"queue": work_queue_name}
    assert registry.get_sample_value("rabbitry_tasks_submitted_total", labels) == 5
    assert registry.get_sample_value("rabbitry_tasks_confirmed_total", labels) == 5


def test_a_name_registered_twice_is_an_error_naming_both_functions(unique_name):
    @task(name=unique_name)
    def first():
        pass

    with pytest.raises(DuplicateTask) as raised:

        @task(name=unique_name)
        def second():
            pass

    message = str(raised.value)
    assert f"{__name__}:test_a_name_registered_twice_is_an_error_naming_both_functions.<locals>.first" in message
    assert f"{__name__}:test_a_name_registered_twice_is_an_error_naming_both_functions.<locals>.second" in message


def test_one_module_imported_under_two_names_registers_its_tasks_once(unique_name, tmp_path):
    # As a script run as __main__ and imported by its own name: the same functions, twice.
    source = tmp_path / "twice.py"
    source.write_text(f"from rabbitry import task\n\n@task(name={unique_name!r})\ndef job():\n    return 'second'\n")
    modules = []
    for module_name in (f"{unique_name}_as_main", f"{unique_name}_by_name"):
        spec = importlib.util.spec_from_file_location(module_name, source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)

    assert modules[0].job is not modules[1].job
    assert modules[1].job() == "second"


def test_task_options_out_of_range_are_refused_at_the_decorator():
    for options in ({"max_retries": -1}, {"max_retries": 101}, {"time_limit": 0}, {"queue": "x" * 300}):
        with pytest.raises(ConfigurationError, match="max_retries|time_limit|queue name"):
            task(**options)(lambda: None)


# -- delay, end to end -------------------------------------------------------------


def write_project(folder, task_name: str, queue: str) -> None:
    """An application: myapp/tasks.py with one task, and send.py that queues it."""
    (folder / "myapp").mkdir()
    (folder / "myapp" / "__init__.py").write_text("")
    (folder / "myapp" / "tasks.py").write_text(
        textwrap.dedent(f"""\
        from rabbitry import task

        @task(name={task_name!r}, queue={queue!r})
        def resize(path: str, width: int = 800) -> None:
            with open(path, "w") as out:
                out.write(f"resized to {{width}}")
        """)
    )
    (folder / "send.py").write_text(
        textwrap.dedent("""\
        import sys

        from myapp.tasks import resize

        print(resize.delay(sys.argv[1], width=400))
        try:
            resize.delay(sys.argv[1], height=300)
        except TypeError as error:
            print(f"TypeError: {error}")
        """)
    )


def test_delay_from_a_script_is_run_by_a_worker_started_in_the_project_folder(
    start_worker, cli_env, work_queue_name, unique_name, tmp_path
):
    write_project(tmp_path, unique_name, work_queue_name)
    worker = start_worker(
        work_queue_name, "--processes", "1", "--tasks", "myapp.tasks", cwd=str(tmp_path), env={"PYTHONPATH": ""}
    )
    output = tmp_path / "resized"

    sent = subprocess.run(
        [sys.executable, "send.py", str(output)], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60
    )

    assert sent.returncode == 0, sent.stderr
    task_id, wrong_call = sent.stdout.splitlines()
    assert wrong_call.startswith("TypeError: ") and "height" in wrong_call
    wait_until(lambda: output.exists() and output.read_text() == "resized to 400", message="the task's run")
    (succeeded,) = worker.events("task_succeeded")
    assert succeeded["task_id"] == task_id and succeeded["task"] == unique_name
    (registered,) = worker.events("tasks_registered")
    assert unique_name in registered["tasks"] and registered["tasks"] == sorted(registered["tasks"])


def test_send_with_options_sends_to_another_queue_with_the_callers_task_id(
    run, start_worker, cli_env, work_queue_name, unique_name, tmp_path
):
    write_project(tmp_path, unique_name, "the-default-queue-of-the-task")
    script = (
        "import sys; from myapp.tasks import resize; "
        "print(resize.send_with_options(args=[sys.argv[1]], kwargs={'width': 5}, queue=sys.argv[2], "
        "task_id='my-own-id'))"
    )
    output = tmp_path / "resized"

    sent = subprocess.run(
        [sys.executable, "-c", script, str(output), work_queue_name],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "my-own-id"
    worker = start_worker(work_queue_name, "--processes", "1", "--tasks", "myapp.tasks", cwd=str(tmp_path))
    wait_until(lambda: output.exists() and output.read_text() == "resized to 5", message="the task's run")
    assert [event["task_id"] for event in worker.events("task_succeeded")] == ["my-own-id"]


def test_a_task_sent_with_a_delay_runs_after_it_and_its_log_line_says_how_late(
    run, start_worker, cli_env, work_queue_name, unique_name, tmp_path
):
    write_project(tmp_path, unique_name, work_queue_name)
    script = (
        "import time; from myapp.tasks import resize; "
        "sent = time.time(); handle = resize.send_with_options(args=['-'], kwargs={'width': 3}, delay=2); "
        "print(handle.id, sent)"
    )
    worker = start_worker(work_queue_name, "--processes", "1", "--tasks", "myapp.tasks", cwd=str(tmp_path))

    sent = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60
    )

    assert sent.returncode == 0, sent.stderr
    task_id, sent_at = sent.stdout.split()
    (done,) = wait_until(lambda: worker.events("task_succeeded"), message="the delayed task's run")
    assert done["task_id"] == task_id and done["late_s"] >= -0.5  # rounded to the nearest second, never earlier
    started = datetime.datetime.fromisoformat(done["timestamp"].replace("Z", "+00:00")).timestamp()
    assert started - float(sent_at) >= 1.5


def test_a_delay_past_the_longest_is_refused_before_anything_is_sent(unique_name):
    @task(name=unique_name)
    def later():
        pass

    with pytest.raises(MessageError, match="at most"):
        later.send_with_options(delay=200 * 86400)
    with pytest.raises(ConfigurationError, match="not both"):
        later.send_with_options(delay=1, eta=2)


# -- arguments that cannot bind ------------------------------------------------------


def test_arguments_that_do_not_fit_are_dead_lettered_on_the_first_attempt(
    run, start_worker, work_queue_name, connection
):
    worker = start_worker(work_queue_name, "--processes", "1")
    unknown = "a_rather_long_keyword_argument_that_sleep_does_not_take"
    calls = [["--args", "[1, 2, 3]"], ["--kwargs", json.dumps({"seconds": 0, unknown: 1})]]
    ids = [
        run("new-task", "--task", "sleep", *call, "--queue", work_queue_name, check=True).stdout.strip()
        for call in calls
    ]

    letters = {letter.message_id: letter for letter in dead_letters(connection, work_queue_name, 2)}

    assert set(letters) == set(ids)
    for letter in letters.values():
        assert letter.headers["x-rabbitry-reason"] == "bad_arguments"
        assert json.loads(letter.body)["attempt"] == 0
    assert (
        letters[ids[0]].headers["x-rabbitry-error"]
        == "TypeError: sleep(seconds: float = 0.0): too many positional arguments"
    )
    assert letters[ids[1]].headers["x-rabbitry-error"].endswith(f"got an unexpected keyword argument '{unknown}'")
    assert not worker.events("task_failed")  # never run, never retried


def test_dlq_list_shortens_a_long_error_on_a_word_boundary(run, start_worker, work_queue_name, connection):
    start_worker(work_queue_name, "--processes", "1")
    unknown = "a_rather_long_keyword_argument_that_sleep_does_not_take"
    run("new-task", "--task", "sleep", "--kwargs", json.dumps({unknown: 1}), "--queue", work_queue_name, check=True)
    wait_until(lambda: dead_letter_count(connection, work_queue_name) == 1, message="the dead letter")

    listed = run("rabbitry", "dlq", "list", "--queue", work_queue_name, check=True).stdout.splitlines()[1]
    (letter,) = [
        json.loads(line)
        for line in run("rabbitry", "dlq", "list", "--json", "--queue", work_queue_name, check=True).stdout.splitlines()
    ]

    error = letter["error"]
    assert error.endswith(f"'{unknown}'")  # stored whole
    shown = listed[listed.index("TypeError") :]
    assert shown.endswith("…") and len(shown) <= 70
    assert error.startswith(shown[:-1]) and error[len(shown) - 1] == " "  # cut between words


def test_a_type_error_raised_inside_a_task_is_an_ordinary_failure(
    run, start_worker, work_queue_name, connection, tmp_path
):
    worker = start_worker(work_queue_name, "--processes", "1", *API_TASKS, cwd=REPOSITORY)
    marker = tmp_path / "runs"
    run(
        "new-task",
        "--task",
        "raise_type_error_inside",
        "--args",
        json.dumps([str(marker)]),
        "--queue",
        work_queue_name,
        check=True,
    )

    (letter,) = dead_letters(connection, work_queue_name, 1)

    assert letter.headers["x-rabbitry-reason"] == "retries_exhausted"  # its own max_retries=1
    assert marker.read_text() == "xx"
    assert len(worker.events("task_failed")) == 1


# -- tasks' own options, and the worker's flags over them -----------------------------


def test_a_tasks_own_max_retries_and_time_limit_are_honoured(run, start_worker, work_queue_name, connection, tmp_path):
    start_worker(work_queue_name, "--processes", "1", *API_TASKS, cwd=REPOSITORY)
    marker = tmp_path / "runs"
    failing = run(
        "new-task",
        "--task",
        "fail_with_no_retry",
        "--args",
        json.dumps([str(marker)]),
        "--queue",
        work_queue_name,
        check=True,
    ).stdout.strip()
    slow = run(
        "new-task", "--task", "outlive_the_time_limit", "--args", "[60]", "--queue", work_queue_name, check=True
    ).stdout.strip()

    letters = {letter.message_id: letter for letter in dead_letters(connection, work_queue_name, 2)}

    assert {letter.headers["x-rabbitry-reason"] for letter in letters.values()} == {"retries_exhausted"}
    assert marker.read_text() == "x"  # max_retries=0: one run, no retry
    assert "TimeLimitExceeded: ran over the 1 s time limit" in letters[slow].headers["x-rabbitry-error"]
    assert "fails on purpose" in letters[failing].headers["x-rabbitry-error"]


def test_the_workers_max_retries_flag_overrides_the_tasks_own(run, start_worker, work_queue_name, connection, tmp_path):
    worker = start_worker(work_queue_name, "--processes", "1", "--max-retries", "1", *API_TASKS, cwd=REPOSITORY)
    marker = tmp_path / "runs"
    run(
        "new-task",
        "--task",
        "fail_with_no_retry",
        "--args",
        json.dumps([str(marker)]),
        "--queue",
        work_queue_name,
        check=True,
    )

    (letter,) = dead_letters(connection, work_queue_name, 1)

    assert letter.headers["x-rabbitry-reason"] == "retries_exhausted"
    assert marker.read_text() == "xx"  # one retry, as --max-retries says, though the task allows none
    assert [event["attempt"] for event in worker.events("task_failed")] == [0]


# -- the public API ------------------------------------------------------------------


def test_importing_rabbitry_is_light_and_every_public_name_resolves():
    script = (
        "import sys, rabbitry; light = not [m for m in sys.modules if m.startswith(('pika', 'click'))]; "
        "print(light, all(getattr(rabbitry, name) for name in rabbitry.__all__), "
        "'Task' in dir(rabbitry), hasattr(rabbitry, 'registry'))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )

    assert result.stdout.split() == ["True", "True", "True", "False"], result.stderr


def test_a_forked_child_sends_on_a_connection_of_its_own(cli_env, work_queue_name, unique_name, connection, tmp_path):
    write_project(tmp_path, unique_name, work_queue_name)
    script = textwrap.dedent("""\
        import os
        from myapp.tasks import resize

        resize.delay("parent, before the fork")
        child = os.fork()
        if child == 0:
            resize.delay("child")
            os._exit(0)
        os.waitpid(child, 0)
        resize.delay("parent, after the fork")
        """)

    sent = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60
    )

    assert sent.returncode == 0, sent.stderr
    queued = [json.loads(delivery.body)["args"][0] for delivery in drain(connection, work_queue_name)]
    assert queued == ["parent, before the fork", "child", "parent, after the fork"]
