"""The one exception the data layer raises for bad input (it always names the file), and the
"did you mean" hint every unknown-name message shares. Torch-free: the command line imports it."""


def did_you_mean(word: object, choices, cutoff: float = 0.6) -> str:
    """``". Did you mean 'x'?"`` for the closest of ``choices`` (difflib), or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f". Did you mean {close[0]!r}?" if close else ""


class DataError(Exception):
    """A missing or corrupt dataset file, or an inconsistency in it. ``str()`` names the path."""

    def __init__(self, path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
