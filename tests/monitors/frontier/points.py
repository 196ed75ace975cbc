"""Frontier points made by hand, for the tests of judging, recommending and rendering."""

from audits.results import Score
from monitors.frontier import grid
from monitors.frontier.results import FrontierPoint, Utility

F1 = "bow_inversion.token_f1"


# -- pure: judging and recommending --------------------------------------------------------------
def point(strength, loss, passes=True, kind="clip_gaussian", failed=(), f1=0.3) -> FrontierPoint:
    param = grid.KNOBS[kind].param
    spec = {"kind": "none"} if strength is None else {"kind": kind, param: strength}
    recall = 1.0 - loss
    return FrontierPoint(spec, grid.label_of(spec), strength, {F1: Score("bow_inversion", "token_f1", f1,
                                                                                  f1 - 0.02, f1 + 0.02, 60)},
                         Utility(recall, max(recall - 0.05, 0), min(recall + 0.05, 1), 200, 200), loss, passes,
                         tuple(failed))
