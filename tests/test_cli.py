import json
import subprocess
import sys

from mobilenetv3.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_exact_counts(capsys):
    expected = {
        ("mobilenet_v3_large", "1.0"): (5_483_032, 216.6),
        ("mobilenet_v3_large", "0.75"): (3_993_528, 154.6),
        ("mobilenet_v3_small", "1.0"): (2_542_856, 56.5),
        ("mobilenet_v3_small", "0.75"): (2_041_872, 43.4),
        ("mobilenet_v3_large_minimal", "1.0"): (3_924_288, 209.1),
        ("mobilenet_v3_small_minimal", "1.0"): (2_044_736, 52.3),
    }
    for (name, width), (params, madds) in expected.items():
        code, out, _ = run(capsys, "profile", name, "--width-mult", width, "--json")
        data = json.loads(out)
        assert code == 0
        assert isinstance(data["params"], int) and isinstance(data["madds"], int)
        assert data["params"] == params and round(data["madds"] / 1e6, 1) == madds
        assert sum(row["params"] for row in data["layers"]) == params


def test_profile_resolution_and_spec_file(capsys, tmp_path):
    from mobilenetv3 import get_spec

    path = tmp_path / "small.json"
    get_spec("mobilenet_v3_small").save(path)
    code, out, _ = run(capsys, "profile", "--spec", str(path), "--resolution", "160", "--json")
    data = json.loads(out)
    assert code == 0 and data["resolution"] == [160, 160] and data["params"] == 2_542_856
    assert data["layers"][0]["out_shape"] == [16, 80, 80]


def test_models_lists_table3_figures(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 0
    assert rows["mobilenet_v3_large"]["params"] == 5_483_032
    assert rows["mobilenet_v3_large"]["paper_madds_m"] == 219.0
    assert rows["mobilenet_v3_small_075"]["madds"] == 43_399_344
    code, out, _ = run(capsys, "models")
    assert "mobilenet_v3_large_075" in out and "Table 3" in out


def test_human_profile_table(capsys):
    code, out, _ = run(capsys, "profile", "mobilenet_v3_small")
    assert code == 0 and "block11.project" in out and "2,542,856" in out


def test_errors_are_one_line_with_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "profile", "mobilenet_v3_larg")
    assert code == 2 and "unknown model" in err and "mobilenet_v3_large" in err
    code, _, err = run(capsys, "profile")
    assert code == 2 and "exactly one" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "blocks": [{"kernel": 3, "exp": 8, "out": 8, "stride": 3}]}')
    code, _, err = run(capsys, "profile", "--spec", str(bad))
    assert code == 2 and "block 1: stride must be 1 or 2" in err
    code, _, err = run(capsys, "profile", "--spec", str(tmp_path / "none.json"))
    assert code == 2 and "not found" in err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "mobilenetv3", "models", "--json"], capture_output=True,
                            text=True, check=True)
    assert json.loads(result.stdout)["models"][0]["name"] == "mobilenet_v3_large_035"
