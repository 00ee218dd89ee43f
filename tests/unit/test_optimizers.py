"""One optimizer factory for both APIs: the eager modes' Keras optimizer and the graph
modes' tf.compat.v1 one get the same hyperparameters from the same config."""

from __future__ import annotations

import pytest

from hvdbench import config

HYPER = ["--train.momentum=0.7", "--train.rho=0.8", "--train.epsilon=0.01"]
HYPER += ["--train.beta_1=0.85", "--train.beta_2=0.95", "--train.learning_rate=0.03"]


@pytest.mark.parametrize(
    ("name", "keras", "v1", "keras_hyper", "v1_hyper"),
    [
        ("sgd", "SGD", "GradientDescentOptimizer", {"momentum": 0.0}, {}),
        ("momentum", "SGD", "MomentumOptimizer", {"momentum": 0.7}, {"_momentum": 0.7}),
        (
            "rmsprop",
            "RMSprop",
            "RMSPropOptimizer",
            {"rho": 0.8, "momentum": 0.7, "epsilon": 0.01},
            {"_decay": 0.8, "_momentum": 0.7, "_epsilon": 0.01},
        ),
        (
            "adam",
            "Adam",
            "AdamOptimizer",
            {"beta_1": 0.85, "beta_2": 0.95, "epsilon": 0.01},
            {"_beta1": 0.85, "_beta2": 0.95, "_epsilon": 0.01},
        ),
    ],
)
def test_keras_and_v1_optimizers_take_the_same_hyperparameters(
    name: str, keras: str, v1: str, keras_hyper: dict[str, float], v1_hyper: dict[str, float]
) -> None:
    from hvdbench.components import training

    train = config.load(None, [f"--train.optimizer={name}", *HYPER]).train
    k = training.make_optimizer(train)
    assert type(k).__name__ == keras
    assert float(k.learning_rate) == pytest.approx(0.03)
    for arg, value in keras_hyper.items():
        assert float(getattr(k, arg)) == pytest.approx(value), arg
    o = training.make_v1_optimizer(train)
    assert type(o).__name__ == v1
    assert getattr(o, "_lr", getattr(o, "_learning_rate", None)) == pytest.approx(0.03)
    for arg, value in v1_hyper.items():
        assert getattr(o, arg) == pytest.approx(value), arg


@pytest.mark.parametrize("precision", ["none", "float16"])
def test_a_restored_keras_optimizer_takes_the_configs_learning_rate_again(tmp_path, precision):
    """Keras keeps the learning rate in a variable that checkpoints restore: without
    set_learning_rate a resumed run would train at the old run's rate."""
    import tensorflow as tf

    from hvdbench.components import training

    def optimizer(lr: float):
        train = config.load(
            None, [f"--train.learning_rate={lr}", f"--train.mixed_precision={precision}"]
        ).train
        opt = training.make_optimizer(train)
        training.build_optimizer_state(opt, [tf.Variable([1.0, 2.0])])
        return opt

    saved = tf.train.Checkpoint(optimizer=optimizer(0.1)).save(str(tmp_path / "ckpt"))
    resumed = optimizer(0.02)
    tf.train.Checkpoint(optimizer=resumed).restore(saved).expect_partial()
    assert float(resumed.learning_rate) == pytest.approx(0.1)  # the checkpoint's
    assert training.set_learning_rate(resumed, 0.02) == pytest.approx(0.1)
    assert float(resumed.learning_rate) == pytest.approx(0.02)
