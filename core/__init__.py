"""The MDLM engine: config, data, schedules, masking, model, objective, trainer, run directory."""
