"""Plain types of the enclave: the OMOP CDM schema and the enclave's bookkeeping tables."""
