"""The README's pytest plugin example is the first test of tests/examples/ricloud_client_example.py,
which tests/install/test_package.py runs from a fresh install: the README shows what CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_example_is_the_example_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing your code against ricloud-server"):]
    (block,) = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)[:1]
    shown = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    example = [line for line in (ROOT / "tests" / "examples" / "ricloud_client_example.py").read_text().splitlines()
               if line.strip()]
    start = example.index(shown[0])
    assert example[start:start + len(shown)] == shown
    assert len(shown) <= 12
