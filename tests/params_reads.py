"""Which params.yaml keys a stage process reads, recorded while it runs (tests/test_reproduction.py).

Copied into a project copy as `src/sitecustomize.py`: every stage command (`PYTHONPATH=src python -m ...`)
then imports it at start-up, and with SYNTH2_TEST_PARAMS_READS set it records the dotted key of every
params leaf the stage reads, into that directory, named by DVC_STAGE (the stage address DVC gives each
command) and the process id. A read is an attribute access on a loaded `Params` section
(`params.world.prior.lr`, also through a sub-section passed to a function) or a whole section turned into
a dict (`model_dump`, iteration): that section's key. Only the stage's body counts (synth2.stage.run_stage's
`body`): the frame around it seeds every stage's RNGs with `seed` whether or not the stage draws from
them, and its tracking run reads `tracking`; neither changes an output.

Recording at run time sees every way the code reaches a value, which a static reading of `params.x.y`
chains would miss (a section bound to another name, `getattr`, a hook module chosen by profile); it sees
only the branches the run takes, which is why it runs the real pipeline. src/ is not a dep of any stage
(only modules and data packages under it are), so the file changes nothing DVC hashes.
"""

import os

LOG_DIR_ENV = "SYNTH2_TEST_PARAMS_READS"


def install(log_dir: str) -> None:
    import json

    from synth2 import params as schema
    from synth2 import stage as frame

    reads: set[str] = set()
    in_body = [False]
    keys: dict[int, str] = {}  # id(section) -> its dotted key ("" for the whole file)
    keep: list[object] = []  # the sections stay alive, so their ids stay theirs

    def register(section: object, key: str) -> None:
        keys[id(section)] = key
        keep.append(section)
        for name in type(section).model_fields:
            value = object.__getattribute__(section, name)
            if isinstance(value, schema.Section):
                register(value, f"{key}.{name}" if key else name)

    def read(section: object, name: str | None) -> None:
        key = keys.get(id(section))
        if key is not None and in_body[0]:
            reads.add(".".join(k for k in (key, name) if k))

    original_getattribute = schema.Section.__getattribute__

    def getattribute(self, name):
        value = original_getattribute(self, name)
        if name in type(self).model_fields and not isinstance(value, schema.Section):
            read(self, name)
        return value

    def whole(method_name: str):
        original = getattr(schema.Section, method_name)

        def method(self, *args, **kwargs):
            read(self, None)
            return original(self, *args, **kwargs)

        return method

    schema.Section.__getattribute__ = getattribute
    for method_name in ("model_dump", "model_dump_json", "__iter__"):
        setattr(schema.Section, method_name, whole(method_name))

    original_load = schema.load_params

    def load_params(*args, **kwargs):
        loaded = original_load(*args, **kwargs)
        register(loaded, "")
        return loaded

    schema.load_params = load_params
    frame.load_params = load_params  # the frame imported it by name above

    original_run_stage = frame.run_stage

    def write() -> None:
        stage = os.environ.get("DVC_STAGE", "unknown").replace("/", "_")
        path = os.path.join(log_dir, f"{stage}.{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump({"stage": os.environ.get("DVC_STAGE"), "reads": sorted(reads)}, f)

    def run_stage(name, body, *args, **kwargs):
        def recorded_body(params):
            in_body[0] = True
            try:
                return body(params)
            finally:
                in_body[0] = False

        # Written when the frame returns (or exits on an error), not at interpreter exit: a stage that
        # succeeded ends with os._exit (synth2.stage.end_process), which runs no atexit handler.
        try:
            return original_run_stage(name, recorded_body, *args, **kwargs)
        finally:
            write()

    frame.run_stage = run_stage


if os.environ.get(LOG_DIR_ENV):
    install(os.environ[LOG_DIR_ENV])
