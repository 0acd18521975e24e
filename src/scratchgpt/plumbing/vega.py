"""An HTML template that lets ``dvc plots show`` draw offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so on a machine without
internet the plots page stays blank. This builds a page with the same three libraries (the
versions DVC asks for) inlined; the repository ships the result as
``.dvc/plots-template.html`` and points DVC at it (``plots.html_template`` in .dvc/config).
Rebuild it with ``python -m scratchgpt.plumbing.vega`` (downloads from the npm registry, sha256
checked, or from ``$SCRATCHGPT_MIRROR/npm/``).
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

from scratchgpt.files import write_text
from scratchgpt.plumbing.download import fetch_file, mirror_from_env
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import FileParams

TEMPLATE = Path(".dvc/plots-template.html")
# (npm package file, sha256 of the tarball, the minified build inside it)
LIBRARIES = [
    (
        "vega/-/vega-5.20.2.tgz",
        "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d",
        "package/build/vega.min.js",
    ),
    (
        "vega-lite/-/vega-lite-5.2.0.tgz",
        "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
        "package/build/vega-lite.min.js",
    ),
    (
        "vega-embed/-/vega-embed-6.18.2.tgz",
        "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
        "package/build/vega-embed.min.js",
    ),
]
REGISTRY = "https://registry.npmjs.org/"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- vega 5.20.2, vega-lite 5.2.0, vega-embed 6.18.2 (BSD-3-Clause, (c) the Vega project), inlined
         by scratchgpt.plumbing.vega so that the page needs no network -->
{scripts}
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def build(out: Path = TEMPLATE, client: HttpClient | None = None) -> Path:
    client = client or HttpClient()
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sha256, member in LIBRARIES:
            spec = FileParams(name=f"npm/{name}", sha256=sha256, urls=[REGISTRY + name])
            archive = Path(tmp) / Path(name).name
            fetch_file(spec, archive, client, mirror_from_env())
            with tarfile.open(archive) as tar:
                code = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            if "</script" in code:
                code = code.replace("</script", "<\\/script")
            scripts.append(f"    <script>{code}</script>")
    page = PAGE.format(scripts="\n".join(scripts))
    write_text(out, page)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else TEMPLATE))
