"""`synth2 study`: Synth²'s claims over several seeds, each seed a DVC experiment, with intervals.

    synth2 study                                      # 5 seeds of the pipeline as params.yaml says
    synth2 study --seeds 3 -S train_vlm.synthetic.source_tags=true --name tags
    synth2 study --budgets 250,500,1000,3000          # balanced vs unbalanced at several budgets
    synth2 study --sweep world.prepare.real_train_size=250,500,1000,2000   # data efficiency

One module per job:

    arguments.py    the command line, defined once (`synth2 study` and `python -m flows.study`)
    plan.py         configurations, experiment names, preset overrides, the sweep; checked before queueing
    run.py          queue and run the DVC experiments (through synth2.dvc_runner), read their evaluations
    stats.py        mean/sd/t-interval over seeds, paired differences, hierarchical bootstrap
    savings.py      a sweep of the human pairs: savings factor with a paired bootstrap, gain per size
    report.py       reports/study/NAME.json, NAME.md, NAME.png
    mlflow_runs.py  one MLflow parent run per study, a child per experiment (synth2.tracking's public API)
    workflow.py     the parts in order: run, collect, report, log

Import from the module that does the job (`from synth2.study.stats import t_interval`): this package
stays empty so that `synth2 --help` does not load pandas and DVC to print the study's arguments.

A study writes reports/study/NAME.json, NAME.md and NAME.png, logs one MLflow parent run with a child per
experiment, and prints the table. Tuning happens on `val`; claims come from `test`.
"""
