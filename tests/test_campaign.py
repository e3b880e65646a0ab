"""Time-limited campaign runs through the real workflow (simulator): resume, stop cleanly, collect traces."""

import json
import shutil
import time

import pytest

from phase_energy.measure import campaign

from .conftest import copy_workflow

pytestmark = pytest.mark.slow


def _statuses(root):
    return sorted(str(p) for p in campaign.point_dirs(root))


def test_campaign_resumes_and_stops_inside_a_chunk(tmp_path, monkeypatch):
    wd, ref = _workdir(tmp_path, monkeypatch)
    base = "levers=[default] contexts=[64]"

    first = campaign.run("config/test.yaml", [f"{base} batch_sizes=[1]"], ref, time_limit_s=300)
    assert first.chunks_done == [f"{base} batch_sizes=[1]"] and first.stopped_in is None
    assert first.chunks_failed == []
    assert _statuses(ref) == [f"engine~native/arch~{a}/bs~1/ctx~64/lever~default/rep~0"
                              for a in ("mamba2-2.7b", "qwen3-4b")]

    # a fresh checkout: nothing measured locally; the second run measures only the new chunk
    shutil.rmtree(wd / "results")
    shutil.rmtree(wd / "logs")
    second = campaign.run("config/test.yaml", [f"{base} batch_sizes=[1]", f"{base} batch_sizes=[8]"], ref,
                          time_limit_s=300)
    assert sorted(second.new_points) == [f"engine~native/arch~{a}/bs~8/ctx~64/lever~default/rep~0"
                                         for a in ("mamba2-2.7b", "qwen3-4b")]
    assert len(_statuses(ref)) == 4
    log = (wd / "logs/measure/engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~default/rep~0.log")
    assert not log.exists()  # the seeded point was not measured again

    # jobs that outlast the time left are stopped; nothing partial reaches the reference folder
    slow = f"{base} batch_sizes=[32] 'sim={{wall_delay_s: 120}}'"
    third = campaign.run("config/test.yaml", [slow], ref, time_limit_s=45, min_chunk_s=5)
    assert third.stopped_in is not None and third.new_points == []
    assert third.interrupted is not None and "bs~32" in third.interrupted  # stopped, not failed
    assert third.failed_points == {}
    assert len(_statuses(ref)) == 4
    assert not list((wd / "results/traces").glob("engine~native/arch~*/bs~32/**/status.json"))


def _workdir(tmp_path, monkeypatch):
    """A fresh copy of the workflow as the working directory, and the reference folder a campaign fills there."""
    wd = copy_workflow(tmp_path / "wf")
    monkeypatch.chdir(wd)
    return wd, wd / "reference" / "traces"


def _nvml_works():
    """Whether NVML starts here; where it does not (no pynvml, or no NVIDIA driver), an nvml job fails for real."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # ImportError or NVMLError
        return False
    pynvml.nvmlShutdown()  # pragma: no cover - a GPU machine
    return True  # pragma: no cover


def test_campaign_names_the_points_whose_jobs_failed(tmp_path, monkeypatch):
    if _nvml_works():  # pragma: no cover - a GPU machine would measure for real
        pytest.skip("NVML works here: the nvml backend would measure instead of failing")
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] batch_sizes=[1] architectures=[qwen3-4b] backend=nvml"
    res = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300)
    assert res.chunks_failed == [chunk] and res.new_points == [] and res.interrupted is None
    point = "engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~default/rep~0"
    assert list(res.failed_points) == [point]
    assert "NVML" in res.failed_points[point] or "GPU" in res.failed_points[point], res.failed_points
    assert _statuses(ref) == []


def test_a_campaign_measures_in_its_own_results_folder(tmp_path, monkeypatch):
    """A config with its own results folder: seeded, measured and logged there; the default folder untouched."""
    wd, ref = _workdir(tmp_path, monkeypatch)
    point = "engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~default/rep~0"
    chunk = "levers=[default] contexts=[64] batch_sizes=[1] architectures=[qwen3-4b] results=results-b"
    res = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300)
    assert res.new_points == [point] and res.failed_points == {}
    assert (wd / "results-b/traces" / point / "status.json").exists()
    assert (wd / "results-b/logs/measure" / f"{point}.log").exists()
    assert not (wd / "results/traces").exists() and not (wd / "logs/measure").exists()
    # a job that fails there is named from that folder's log
    if not _nvml_works():  # the nvml job fails, as this part wants
        failing = chunk.replace("batch_sizes=[1]", "batch_sizes=[8]") + " backend=nvml"
        res = campaign.run("config/test.yaml", [failing], ref, time_limit_s=300)
        assert list(res.failed_points) == [point.replace("bs~1", "bs~8")]


def test_repetitions_of_a_point_land_in_different_runs(tmp_path, monkeypatch):
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] batch_sizes=[1] architectures=[qwen3-4b] repetitions=2"
    point = "engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~default"
    first = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300)
    assert first.new_points == [f"{point}/rep~0"]  # one repetition per run
    second = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300)
    assert second.new_points == [f"{point}/rep~1"]
    third = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300)
    assert third.new_points == [] and third.chunks_done == [chunk]
    with pytest.raises(ValueError, match="not key=value"):
        campaign.chunk_config("config/test.yaml", "contexts")
    with pytest.raises(ValueError, match=r"value of 'measurement' is not valid YAML.*warmup_runs: 1"):
        campaign.chunk_config("config/test.yaml", "'measurement={warmup_runs: 1'")
    with pytest.raises(ValueError, match="No closing quotation"):
        campaign.chunk_config("config/test.yaml", "'measurement={warmup_runs: 1}")


def test_a_bad_later_chunk_stops_the_campaign_before_it_measures(tmp_path, monkeypatch):
    """The CLI: a damaged override in the second chunk is named at once (exit 2), nothing is measured."""
    from phase_energy.cli import main

    _, ref = _workdir(tmp_path, monkeypatch)
    good = "levers=[default] contexts=[64] batch_sizes=[1] architectures=[qwen3-4b]"
    rc = main(["campaign", "--configfile", "config/test.yaml", "--into", str(ref), "--chunk", good,
               "--chunk", "contexts=[64"])
    assert rc == 2
    assert not list(ref.rglob("status.json"))


def test_the_cli_groups_by_default_and_none_gives_each_point_a_workflow_job(tmp_path, monkeypatch, capsys, caplog):
    """`phase-energy campaign` groups the native and vLLM points unless told `--group-engines none`, which
    measures each point as a workflow job; a bad engine name is refused by name before anything runs."""
    from phase_energy.cli import main

    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[native] batch_sizes"
    path = "engine~native/arch~qwen3-4b/bs~{}/ctx~64/lever~default/rep~0"

    def campaign_cli(batch, *more):
        caplog.clear()
        rc = main(["campaign", "--configfile", "config/test.yaml", "--into", str(ref), "--chunk",
                   f"{chunk}=[{batch}]", *more])
        out = capsys.readouterr().out
        return rc, out.strip().splitlines()[-1] if rc == 0 else caplog.text  # errors go to the CLI's log

    def metadata(batch):
        return json.loads((ref / path.format(batch) / "metadata.json").read_text())

    rc, line = campaign_cli(1)
    assert rc == 0 and [g["points"] for g in json.loads(line)["groups"]] == [[path.format(1)]]
    assert metadata(1)["driver"] == "phase-energy measure --points"
    rc, line = campaign_cli(8, "--group-engines", "none")
    assert rc == 0 and json.loads(line)["groups"] == [] and json.loads(line)["new_points"] == 1
    assert metadata(8).get("driver") != "phase-energy measure --points" and "measured_in_group" not in metadata(8)
    for bad, named in (("vlm", "'vlm'"), ("native,none", "'none'"), ("", "''")):
        rc, err = campaign_cli(32, "--group-engines", bad)
        assert rc == 2 and named in err and "accepted: engines from native, vllm" in err and "or none" in err
    # groups run here: with jobs sent to a profile or executor, the default is not assumed
    for args, named in (("--profile profiles/slurm", "--profile"), ("--prof=profiles/slurm", "--prof="),
                        ("-eslurm", "-eslurm"), ("--executor slurm", "--executor")):
        rc, err = campaign_cli(32, f"--snakemake-args={args}")
        assert rc == 2 and f"given {named}" in err and "--group-engines none" in err
    monkeypatch.setenv("SNAKEMAKE_PROFILE", "profiles/slurm")
    rc, err = campaign_cli(32)
    assert rc == 2 and "SNAKEMAKE_PROFILE=profiles/slurm" in err
    monkeypatch.delenv("SNAKEMAKE_PROFILE")
    assert not (ref / path.format(32)).exists()


def test_grouped_engines_measure_a_presets_missing_points_in_one_process(tmp_path, monkeypatch):
    """--group-engines vllm: the vLLM points a run misses go to one `phase-energy measure --points` process per
    preset (simulator here), the native ones through the workflow; all are copied into the reference folder."""
    wd, ref = _workdir(tmp_path, monkeypatch)
    base = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[native,vllm]"
    path = "engine~{}/arch~qwen3-4b/bs~{}/ctx~64/lever~default/rep~0"
    first = campaign.run("config/test.yaml", [f"{base} batch_sizes=[1]"], ref, time_limit_s=300,
                         group_engines=["vllm"])
    assert sorted(first.new_points) == [path.format("native", 1), path.format("vllm", 1)]
    second = campaign.run("config/test.yaml", [f"{base} batch_sizes=[1,8,32]"], ref, time_limit_s=300,
                          group_engines=["vllm"])
    assert second.chunks_done == [f"{base} batch_sizes=[1,8,32]"] and second.failed_points == {}
    # the missing vLLM points only (batch 1 is in the reference folder), in one process
    assert [g["points"] for g in second.groups] == [[path.format("vllm", 8), path.format("vllm", 32)]]
    assert second.groups[0]["returncode"] == 0
    assert sorted(second.new_points) == sorted(path.format(e, b) for e in ("native", "vllm") for b in (8, 32))
    meta = json.loads((ref / path.format("vllm", 32) / "metadata.json").read_text())
    assert meta["measured_in_group"] == ["8x64", "32x64"] and meta["driver"] == "phase-energy measure --points"
    assert "measured_in_group" not in json.loads((ref / path.format("native", 32) / "metadata.json").read_text())
    assert (wd / "logs/measure" / f"{path.format('vllm', 32)}.log").exists()  # where the workflow's job logs
    with pytest.raises(ValueError, match="accepted: native, vllm"):
        campaign.run("config/test.yaml", [base], ref, time_limit_s=300, group_engines=["vlm"])


def test_native_points_can_be_grouped_too(tmp_path, monkeypatch):
    """--group-engines native: the native points of every preset in one process (one import of torch and the
    compiler for all of them), each written where its own job would write it."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = ("levers=[default] contexts=[64] architectures=[qwen3-4b,mamba2-2.7b] engines=[native] "
             "batch_sizes=[1,8]")
    path = "engine~native/arch~{}/bs~{}/ctx~64/lever~default/rep~0"
    want = [path.format(a, b) for a in ("qwen3-4b", "mamba2-2.7b") for b in (1, 8)]
    run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300, group_engines=["native"])
    assert len(run.groups) == 1 and sorted(run.groups[0]["points"]) == sorted(want)
    assert run.groups[0]["group"] == "engine~native-arch~qwen3-4b+mamba2-2.7b-lever~default-rep~0" or \
        run.groups[0]["group"] == "engine~native-arch~mamba2-2.7b+qwen3-4b-lever~default-rep~0"
    assert sorted(run.new_points) == sorted(want) and run.chunks_done == [chunk]
    meta = json.loads((ref / path.format("qwen3-4b", 8) / "metadata.json").read_text())
    assert sorted(meta["measured_in_group"]) == sorted(f"{a}:{b}x64" for a in ("qwen3-4b", "mamba2-2.7b")
                                                       for b in (1, 8))
    assert meta["engine"] == "native"


def test_a_point_left_alone_by_its_group_is_measured_as_its_own_job(tmp_path, monkeypatch):
    """A group whose shared vLLM engine cannot hold a point reports it as ``alone``; the campaign then measures
    it through the workflow as a job of its own. Only a shared vLLM engine on a GPU can leave a point alone, so
    the group's process is a stand-in here that measures nothing and reports the batch-8 point alone; the
    workflow after it is real (simulator)."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[vllm] batch_sizes=[1,8]"
    path = "engine~vllm/arch~qwen3-4b/bs~{}/ctx~64/lever~default/rep~0"

    def groups_leave_batch_8(out, groups, cfg, measured, into, deadline):
        for points in groups.values():
            out.groups.append({"group": "stand-in", "points": [p.path for p in points], "returncode": 0,
                               "crashed": False, "not_started": [], "engine_start_s": None,
                               "alone": {path.format(8): "memory: the shared engine holds 100 tokens"}})
        return True, False, False

    monkeypatch.setattr(campaign, "run_groups", groups_leave_batch_8)
    run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300, group_engines=["vllm"])
    assert run.new_points == [path.format(8)]  # batch 1 was the (stand-in) group's: nothing measured it
    assert "measured_in_group" not in json.loads((ref / path.format(8) / "metadata.json").read_text())


def test_points_left_alone_wait_for_a_later_run_when_too_little_time_is_left(tmp_path, monkeypatch):
    """The groups leave a point for a job of its own but use up the time: the workflow is not started for it
    with less than a chunk's minimum left; the point is neither failed nor interrupted. The group process is
    a stand-in, as above."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[vllm] batch_sizes=[8]"
    point = "engine~vllm/arch~qwen3-4b/bs~8/ctx~64/lever~default/rep~0"

    def groups_leave_it_late(out, groups, cfg, measured, into, deadline):
        time.sleep(1.5)
        out.groups.append({"group": "stand-in", "points": [point], "returncode": 0, "crashed": False,
                           "not_started": [], "engine_start_s": None, "alone": {point: "memory: short by 4 %"}})
        return True, False, False

    monkeypatch.setattr(campaign, "run_groups", groups_leave_it_late)
    run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=3.0, min_chunk_s=2.0, group_engines=["vllm"])
    assert run.stopped_in == chunk and run.new_points == []
    assert run.failed_points == {} and run.interrupted is None
    assert not (campaign.measure_logs(campaign.chunk_config("config/test.yaml", chunk)) / f"{point}.log").exists()


def test_a_clock_slurm_locks_is_never_measured_in_a_group(tmp_path, monkeypatch):
    """With ``cluster.gpu_freq_for_smclock``, SLURM sets an smclock point's clock for a workflow job only: the
    campaign groups the default lever's point and gives the smclock point to the workflow (simulator here)."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = ("levers=[default,smclock:1410] contexts=[64] architectures=[qwen3-4b] engines=[native] "
             "batch_sizes=[1] 'cluster={gpu_freq_for_smclock: true}'")
    path = "engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~{}/rep~0"
    run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300, group_engines=["native"])
    assert [g["points"] for g in run.groups] == [[path.format("default")]]
    assert sorted(run.new_points) == sorted(path.format(lev) for lev in ("default", "smclock-1410"))
    assert "measured_in_group" not in json.loads((ref / path.format("smclock-1410") / "metadata.json").read_text())


def test_a_point_left_alone_when_the_time_is_up_is_not_a_failure(tmp_path, monkeypatch):
    """The time runs out in the groups: a point its group left for a job of its own (with the group's log line
    saying so, as the real group writes) is left for a later run, not reported as failed. The group process is
    a stand-in, as above (only a shared vLLM engine on a GPU leaves a point alone)."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[vllm] batch_sizes=[1,8]"
    point = "engine~vllm/arch~qwen3-4b/bs~8/ctx~64/lever~default/rep~0"

    def groups_run_out_of_time(out, groups, cfg, measured, into, deadline):
        log = campaign.measure_logs(cfg) / f"{point}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("group: the engine shared by 1x64,8x64 cannot hold it; left for a job of its own\n")
        out.groups.append({"group": "stand-in", "points": [point], "returncode": 0, "crashed": False,
                           "not_started": [], "engine_start_s": None, "alone": {point: "memory: short by 4 %"}})
        return True, True, False

    monkeypatch.setattr(campaign, "run_groups", groups_run_out_of_time)
    run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300, group_engines=["vllm"])
    assert run.stopped_in == chunk and run.new_points == []
    assert run.failed_points == {} and run.interrupted is None


def test_a_group_process_that_dies_before_reporting_is_a_crash(tmp_path, monkeypatch, caplog):
    """A group that cannot even open its card (the nvml backend on this GPU-less machine) ends without its
    summary: the campaign says it crashed and copies nothing, and gives its points to the workflow in the
    same run (here they fail there too, each with its own log line), so no point is silently left out."""
    _, ref = _workdir(tmp_path, monkeypatch)
    chunk = "levers=[default] contexts=[64] architectures=[qwen3-4b] engines=[vllm] batch_sizes=[1,8] backend=nvml"
    with caplog.at_level("ERROR"):
        run = campaign.run("config/test.yaml", [chunk], ref, time_limit_s=300, group_engines=["vllm"])
    assert [g["crashed"] for g in run.groups] == [True] and run.groups[0]["returncode"] != 0
    point = "engine~vllm/arch~qwen3-4b/bs~{}/ctx~64/lever~default/rep~0"
    assert sorted(run.groups[0]["alone"]) == [point.format(1), point.format(8)]
    assert run.new_points == [] and run.chunks_failed == [chunk]
    assert "before reporting its points" in caplog.text
    assert sorted(run.failed_points) == [point.format(1), point.format(8)]  # the workflow's jobs ran them
