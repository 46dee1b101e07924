"""Security monitoring of the watched stack (issue 17): log parsers, detectors, findings."""
