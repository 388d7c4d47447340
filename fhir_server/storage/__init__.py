"""Storage: the only code that writes SQL for resources."""
