"""`mnv3 bench`'s task sections: Table 7's segmentation rows and Table 6's SSDLite networks, their comparisons
against the paper's figures (made-up timings equal to the paper's give the paper's ratios), and a tiny real run
through the bench and the CLI. No test asserts a time."""

import json
import sys

import pytest

from markers import needs_onnx, needs_openvino
from mobilenetv3.bench import tasks
from mobilenetv3.bench.report import section_report
from mobilenetv3.bench.run import paper_comparisons
from mobilenetv3.cli import main
from mobilenetv3.detection import RawOutputs, det_cost
from mobilenetv3.detection.paper import TABLE6
from mobilenetv3.segmentation import seg_cost
from mobilenetv3.segmentation.paper import TABLE7

TINY = dict(rounds=2, warmup=0, min_runs=1, min_seconds=0.0, seg_size=(64, 128), det_resolution=64)


def fake_rows(entries, ms):
    rows = []
    for e in entries:
        cost = e["cost"]()
        rows.append({**e, "median_ms": ms(e), "round_medians_ms": [ms(e), 2 * ms(e)], "params": cost.params,
                     "madds": cost.madds})
    return rows


def settings(**kw):
    return {"runtime": "eager", "seg_size": (512, 1024), "det_resolution": 320, **kw}


def test_segmentation_rows_and_ratios_against_table7():
    entries, summarise = tasks.segmentation_heads(settings())
    assert [e["row"] for e in entries] == [4, 6, 7, 8]
    assert [e["label"] for e in entries] == ["row 4: V2 LR-ASPP F=128", "row 6: V3 R-ASPP F=256",
                                             "row 7: V3 LR-ASPP F=256", "row 8: V3 LR-ASPP F=128"]
    assert all(e["input_shape"] == (1, 3, 512, 1024) for e in entries)
    # the cost at the timed size is the segmentation cost of Table 7's spec at that size
    row8 = next(r for r in TABLE7 if r.row == 8)
    assert entries[3]["cost"]().madds == seg_cost(row8.spec(), (512, 1024)).madds
    sec = summarise(fake_rows(entries, lambda e: e["paper_ms"]["Pixel 3"]))
    lr_vs_r, v3_vs_v2 = sec["comparisons"]
    assert lr_vs_r["latency_ratio"] == pytest.approx(659 / 668) == pytest.approx(lr_vs_r["paper_latency_ratio"])
    assert v3_vs_v2["fastest_ratio"] == pytest.approx(657 / 766) == pytest.approx(v3_vs_v2["paper_latency_ratio"])
    assert v3_vs_v2["paper_madds_ratio"] == pytest.approx(9.74 / 12.57)
    # our MAdds ratio at half resolution is close to the paper's (measured at full resolution)
    assert v3_vs_v2["madds_ratio"] == pytest.approx(9.74 / 12.57, rel=0.05)


def test_detection_rows_and_ratios_against_table6():
    entries, summarise = tasks.ssdlite_detectors(settings())
    assert [e["backbone"] for e in entries] == [r.backbone for r in TABLE6]
    assert entries[2]["cost"]().madds == det_cost(TABLE6[2].spec(), 320).madds
    sec = summarise(fake_rows(entries, lambda e: e["paper_ms"]["Pixel 1"]))
    by_pair = {c["pair"]: c for c in sec["comparisons"]}
    assert by_pair["V3 / V2"]["latency_ratio"] == pytest.approx(137 / 162)
    assert by_pair["V3-Y / V2"]["paper_latency_ratio"] == pytest.approx(119 / 162)
    assert by_pair["V3-Small / V2"]["fastest_ratio"] == pytest.approx(52 / 162)
    # Table 6's MAdds ratios hold for ours within 5%
    for c in sec["comparisons"]:
        assert c["madds_ratio"] == pytest.approx(c["paper_madds_ratio"], rel=0.05), c["pair"]


def test_raw_outputs_are_the_head_outputs():
    import torch

    from mobilenetv3.detection import build_detection

    model = build_detection(TABLE6[4].spec()).eval()
    x = torch.randn(1, 3, 64, 64)
    cls_logits, boxes = RawOutputs(model)(x)
    ref = model(x, raw=True)
    assert torch.equal(cls_logits, ref[0]) and torch.equal(boxes, ref[1])
    assert cls_logits.shape[-1] == 91 and boxes.shape[-1] == 4


def test_a_tiny_run_of_both_sections():
    res = paper_comparisons("segmentation,detection", **TINY)
    seg, det = res["sections"]["segmentation"], res["sections"]["detection"]
    assert [r["resolution"] for r in seg["rows"]] == [[64, 128]] * 4
    assert [r["resolution"] for r in det["rows"]] == [64] * 6
    for r in seg["rows"] + det["rows"]:
        assert r["median_ms"] > 0 and len(r["round_medians_ms"]) == 2 and r["params"] > 0 and r["madds"] > 0
        assert "build" not in r and "cost" not in r
    assert len(seg["comparisons"]) == 2 and len(det["comparisons"]) == 5
    assert res["settings"]["seg_size"] == [64, 128] and res["settings"]["det_resolution"] == 64
    json.dumps(res)
    lines = [x for x in section_report("detection", det) if isinstance(x, str)]
    assert any("Table 6" in x for x in lines)


@needs_onnx
def test_cli_runs_the_task_sections_on_onnxruntime(capsys):
    argv = ["bench", "--sections", "detection", "--runtime", "onnxruntime", "--det-resolution", "64", "--rounds",
            "1", "--warmup", "0", "--min-runs", "1", "--min-seconds", "0", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SSDLite V3-Small-Y" in out and "V3-Y / V2" in out and "paper P-1" in out


@needs_openvino
def test_the_task_sections_run_on_openvino():
    res = paper_comparisons("segmentation", **{**TINY, "runtime": "openvino"})
    rows = res["sections"]["segmentation"]["rows"]
    assert res["settings"]["runtime"] == "openvino" and {r["runtime"] for r in rows} == {"openvino"}
    assert all(r["median_ms"] > 0 for r in rows)


def test_a_missing_openvino_is_named_before_any_work(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if it were not installed
    assert main(["bench", "--sections", "segmentation", "--runtime", "openvino", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "openvino is not installed" in err and "mobilenetv3[openvino]" in err


@pytest.mark.parametrize("argv, message", [
    (["--seg-size", "64", "2"], "seg_size"),
    (["--det-resolution", "0"], "det_resolution"),
])
def test_bad_sizes_are_refused(capsys, argv, message):
    assert main(["bench", "--sections", "detection", *argv, "--quiet"]) != 0
    assert message in capsys.readouterr().err
