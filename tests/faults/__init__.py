"""The fault-injection tests: each fault caused for real, on RabbitMQ nodes of their own."""
