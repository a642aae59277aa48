"""The comparison report of a compare job: report.json, PNG figures and an HTML page."""
