"""Running a model or an exported file on one runtime, and timing it: the harness (:mod:`.timing`), machine facts
(:mod:`.cpu`) and one module per backend. Nothing here exports a model: turning a module into a file is
:mod:`mobilenetv3.deploy`'s job, and measuring a module end to end is :mod:`mobilenetv3.latency`'s."""
