"""The one exception root of devserve, so callers catch one thing and CLI maps each to an exit code.

    DevserveError            message + hint + exit_code
    ├── ConfigError          a bad option value (exit 2); names the option and where it came from
    ├── AppImportError       the app could not be loaded (exit 3)
    ├── BindError            the listening socket could not be created (exit 1)
    └── LifespanStartupError the app's lifespan startup failed (exit 4)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_APP_IMPORT = 3
EXIT_STARTUP = 4


class DevserveError(Exception):
    """Base of every error devserve reports to a user in one line."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as the single line the CLI prints."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(DevserveError):
    """An option has an invalid value; says which option and which source set it."""

    exit_code = EXIT_USAGE

    def __init__(
        self, option: str, message: str, *, source: str | None = None, hint: str | None = None
    ) -> None:
        where = f" (from {source})" if source else ""
        super().__init__(f"invalid value for {option}{where}: {message}", hint=hint)
        self.option = option
        self.source = source


class AppImportError(DevserveError):
    """The application import string could not be resolved to a callable."""

    exit_code = EXIT_APP_IMPORT


class BindError(DevserveError):
    """A listening socket could not be bound (port in use, permission, bad address)."""

    exit_code = EXIT_FAILURE


class LifespanStartupError(DevserveError):
    """The app reported or raised a lifespan startup failure."""

    exit_code = EXIT_STARTUP
