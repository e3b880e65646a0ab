# One GPU job per grid point: prefill and decode under one lever, written as a raw trace.
# Simulated jobs run inside the workflow's process (in threads with profiles/default; with --cores 2 or
# more in a pool of worker processes): the same code as `phase-energy measure`, without starting Python
# for each of thousands of points. A simulated job declares status.json alone: the job writes it last, with
# the size and checksum of each other file of the trace, and every later rule reads the trace through it.
# Snakemake keeps records for each declared output (incomplete marks, metadata, existence checks), a large
# part of its own time on thousands of simulated points (docs/benchmarks.md). The job empties the point's
# folder before it writes; a trace that lost a table is moved aside and measured again by the workflow's own
# check of status.json's sizes. So a table is no target of its own, and `--delete-all-output` removes a
# simulated trace's status.json only (delete results/traces for the rest).

if SIMULATED:

    rule measure:
        input:
            config=MEASURE_CONFIG,
        output:
            status=f"{MEASURED_TRACES}/{POINT}/status.json",
        log:
            f"{LOGS}/measure/{POINT}.log",
        resources:
            # no GPU on the simulator (get_gpu_count's answer there), as a constant: a function resource is
            # evaluated for every job, thousands of times
            gpu=0,
        run:
            run_simulated(
                input.config,
                GridPoint.from_wildcards(wildcards),
                Path(output.status).parent,
                log[0],
                workflow.cores,
                f"{LOGS}/workers",
            )

else:

    rule measure:
        input:
            config=MEASURE_CONFIG,
        output:
            samples=f"{MEASURED_TRACES}/{POINT}/samples.parquet",
            windows=f"{MEASURED_TRACES}/{POINT}/windows.parquet",
            metadata=f"{MEASURED_TRACES}/{POINT}/metadata.json",
            status=f"{MEASURED_TRACES}/{POINT}/status.json",
        log:
            f"{LOGS}/measure/{POINT}.log",
        conda:
            "../../envs/measure.yaml"
        resources:
            gpu=get_gpu_count,
            slurm_extra=get_slurm_extra,
        params:
            lever=get_lever,
            out=get_output_dir,
        shell:
            "phase-energy measure --config {input.config:q} --engine {wildcards.engine} --arch {wildcards.arch}"
            " --batch {wildcards.bs} --context {wildcards.ctx} --lever {params.lever}"
            " --rep {wildcards.rep} --out {params.out:q} > {log:q} 2>&1"


rule traces:
    input:
        get_trace_status_files(),
    localrule: True
