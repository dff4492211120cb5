"""How a spec that breaks a rule is refused: one line per broken rule, naming its field."""

from pydantic import ValidationError


class FieldError(ValueError):
    """A rule broken at `field`, a path relative to the model whose validator raised it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidSpec(ValueError):
    """A spec that passed the CRD schema but breaks a rule only the operator checks."""


def describe_errors(exc: ValidationError) -> str:
    """One line per error, each naming the offending field as `spec.a[0].b`."""
    lines = []
    for error in exc.errors():
        path = "spec"
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            path += f".{cause.field}"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)
