"""The one exception the data layer raises for bad input: it always names the file."""


class DataError(Exception):
    """A missing or corrupt dataset file, or an inconsistency in it. ``str()`` names the path."""

    def __init__(self, path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
