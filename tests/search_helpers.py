"""Helpers shared by the search tests."""

from mobilenetv3.search.evaluator import SerialEvaluator


class Interrupting(SerialEvaluator):
    """Stops the run (as Ctrl-C would) after ``after`` results have been delivered."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.left = after

    def run(self, fn, jobs, *, on_result=None):
        def counted(i, result):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            if on_result is not None:
                on_result(i, result)

        return super().run(fn, jobs, on_result=counted)
