"""Process supervision: start a child with a log, wait for its health, stop its whole group; read /proc."""
