"""From a checkout's root the kernels/ folder (maxsim.kernels' source) must not stand in for Hugging Face's
``kernels`` package, which transformers imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_kernels_is_not_the_checkout_folder():
    code = (
        "import sys\n"
        "try:\n"
        "    import kernels\n"
        "except ImportError as e:\n"
        "    print('missing', e)\n"
        "else:\n"
        "    print('found', kernels.__file__)\n"
        "import maxsim.kernels as m\n"
        "print('maxsim', callable(m.maxsim_scores), 'maxsim_scores' in dir(sys.modules.get('kernels')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()[:2]
    if first.startswith("found"):
        assert not Path(first.split(" ", 1)[1]).resolve().is_relative_to(ROOT / "kernels"), first
    else:
        assert "maxsim.kernels, not Hugging Face's kernels package" in first
    assert second == "maxsim True False"
