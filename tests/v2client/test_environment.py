"""The py27 environment itself: the unmodified client as PyPI ships it."""


def test_the_client_is_the_unmodified_2_3_10(py27_client, tmp_path):
    result = py27_client.run(
        ["-c", "import sys, ricloud, pkg_resources; print(sys.version_info[:2]);"
               " print(pkg_resources.get_distribution('ricloud').version)"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(2, 7)", "2.3.10"]
