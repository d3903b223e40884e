"""Training runs: the job behind train.py, the LightningModule, its callbacks, loggers and schedules,
and what makes a run resumable, stoppable and distributable."""
