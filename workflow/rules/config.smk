# The config parts the jobs read, written once each (their names say their content).


rule config_file:
    output:
        f"{RESULTS}/config/{{name}}.json",
    log:
        f"{LOGS}/config/{{name}}.log",
    localrule: True
    params:
        text=get_config_text,
    run:
        Path(output[0]).write_text(params.text)
        Path(log[0]).write_text(f"wrote {output[0]}\n")
