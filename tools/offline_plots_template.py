"""Write plots/offline.html: DVC's plots page template with Vega, Vega-Lite and Vega-Embed inlined.

DVC's default page loads the three libraries from a CDN, so `dvc plots show` gives a blank page
offline. `.dvc/config` sets `plots.html_template` to this file instead. The libraries are
inlined rather than referenced as files beside the template: DVC writes the page wherever `-o`
says (default `dvc_plots/index.html`) and copies nothing next to it, so a relative `<script src>`
would break for every output directory but one; inlined, the page works anywhere, also when
moved or attached to an issue.

Usage, from npm tarballs (`npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0`):
    python tools/offline_plots_template.py vega-5.33.1.tgz vega-lite-5.23.0.tgz vega-embed-6.29.0.tgz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # the order the page must load them in
OUT = Path(__file__).resolve().parent.parent / "plots" / "offline.html"
# dvc_render fills these by plain string replacement; {plot_divs} is required.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>regbench: DVC plots</title>
<!-- {provenance}
     Inlined so the page renders without a network; licenses (BSD-3-Clause) in plots/LICENSE-*.
     Written by tools/offline_plots_template.py: regenerate, do not edit. -->
{scripts}
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def read_build(tarball: Path) -> tuple[str, str, str]:
    """(name, version, minified UMD build) of an npm tarball."""
    with tarfile.open(tarball) as archive:
        package = json.load(archive.extractfile("package/package.json"))
        name = package["name"]
        code = archive.extractfile(f"package/build/{name}.min.js").read().decode("utf-8")
    if package.get("license") != "BSD-3-Clause":
        raise ValueError(f"{tarball}: license {package.get('license')!r}, expected BSD-3-Clause")
    for placeholder in PLACEHOLDERS:
        if placeholder in code:
            raise ValueError(f"{tarball}: contains DVC's placeholder {placeholder}; it would be replaced")
    # Source maps are not shipped; the comment would only make a browser look for them.
    code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMappingURL="))
    return name, package["version"], code.replace("</script", "<\\/script")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tarballs", nargs=3, type=Path, help="npm pack tarballs of vega, vega-lite, vega-embed")
    args = parser.parse_args()
    builds = {name: (version, code) for name, version, code in map(read_build, args.tarballs)}
    if sorted(builds) != sorted(LIBRARIES):
        raise ValueError(f"need one tarball each of {', '.join(LIBRARIES)}, got {', '.join(sorted(builds))}")
    provenance = "; ".join(
        f"{name} {builds[name][0]} (npm, build/{name}.min.js sha256 "
        f"{hashlib.sha256(builds[name][1].encode()).hexdigest()[:16]})"
        for name in LIBRARIES
    )
    scripts = "\n".join(f"<script>/* {name} {builds[name][0]} */\n{builds[name][1]}\n</script>" for name in LIBRARIES)
    OUT.write_text(PAGE.format(provenance=provenance, scripts=scripts), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {provenance}")


if __name__ == "__main__":
    main()
