"""securefl inside a Flower app: the digits task, any securefl scheme (see ../README.md)."""
