"""plotly.js from the installed plotly package, served as our own static file (no CDN).

The finder exposes exactly one file, plotly/package_data/plotly.min.js, as
`vendor/plotly.min.js`, so `collectstatic` copies (and WhiteNoise compresses) the same
version that the Python package was built against.
"""

import importlib.util
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_NAME = "vendor/plotly.min.js"
_PREFIX, _, _FILENAME = PLOTLY_STATIC_NAME.rpartition("/")


def plotly_package_data() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "package_data"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.location = plotly_package_data()
        self.storage = FileSystemStorage(location=str(self.location or ""))
        self.storage.prefix = _PREFIX  # type: ignore[attr-defined]

    def _path(self) -> Path | None:
        if self.location is None:
            return None
        path = self.location / _FILENAME
        return path if path.is_file() else None

    def check(self, **kwargs) -> list:
        if self._path() is None:
            return [Error("plotly.min.js not found: install the plotly package (requirements.txt).", id="web.E001")]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs) -> str | list[str]:
        found = self._path()
        if path != PLOTLY_STATIC_NAME or found is None:
            return [] if find_all else ""
        return [str(found)] if find_all else str(found)

    def list(self, ignore_patterns):
        if self._path() is not None:
            yield _FILENAME, self.storage
