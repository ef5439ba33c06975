"""Judge training, calibration, the judge artifact format and baseline judges."""
