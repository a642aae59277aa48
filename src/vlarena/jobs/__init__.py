"""Jobs: the spec users submit, the states a job goes through, and their store in Redis."""
