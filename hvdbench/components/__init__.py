"""The parts a run is made of, each mode-agnostic: step metrics, the result record,
checkpoints, the loss and optimizers, core binding and thread pools, the agreed stop on a
signal, and the watchdog beside the collectives."""
