"""Numbers the log prints must not mislead: FPS@all of a short run, the resume line's best Acc@1 and epoch."""
import time

from resnext.training.meters import Throughput
from resnext.training.resume import describe_start


def test_a_run_no_longer_than_its_fps_warm_up_still_measures_fps():
    """5 steps with fps_warmup_steps=5 (the default) printed FPS@all 0.000, which ModelZoo scripts average in."""
    throughput = Throughput(warmup_steps=5)
    for _ in range(3):
        time.sleep(0.01)
        throughput.step(16)
    assert 0 < throughput.fps < 3 * 16 / 0.03  # all 3 steps counted, over the time they took
    past_warm_up = Throughput(warmup_steps=1)
    past_warm_up.step(16)
    time.sleep(0.02)
    past_warm_up.step(16)
    assert 0 < past_warm_up.fps <= 16 / 0.02  # the step after the warm-up, timed from the warm-up's end


def test_a_resume_before_any_validation_prints_no_best_acc1():
    line = describe_start("run/checkpoint.pth.tar", {"epoch": 0, "step": 40, "best_acc1": -1.0}, evaluate=False)
    assert line == "resumed from run/checkpoint.pth.tar at epoch 0 step 40 (not validated yet)"
    assert describe_start("c.pth.tar", {"epoch": 3, "step": 0, "best_acc1": 71.25}, evaluate=False) == \
        "resumed from c.pth.tar at epoch 3 step 0 (best Acc@1 71.250)"


def test_evaluate_names_the_epoch_its_checkpoint_was_written_at():
    """evaluate=true with an epoch-2 checkpoint logged "at epoch 0 step 0"."""
    line = describe_start("model_best.pth.tar", {"epoch": 2, "best_acc1": 55.0}, evaluate=True)
    assert line == "evaluating model_best.pth.tar: the weights after 2 epoch(s) of training (best Acc@1 55.000)"
