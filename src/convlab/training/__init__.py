"""The harness behind train.py: the reference network, its LightningModule, data, callbacks, probes."""
