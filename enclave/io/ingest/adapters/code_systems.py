"""Source code-system names → the staged ``code_system``: an OMOP ``vocabulary_id`` spelling.

The staged ``code_system`` is the *declared* system of a row, spelled as OMOP spells its vocabulary
(``SNOMED``, ``LOINC``, ``RxNorm``, ``ICD10CM`` ...), plus the enclave's own ``ICD10CN`` (Chinese
clinical ICD-10) and ``LOCAL`` (a hospital's own codes, translated by the site mapping). Adapters
honour what the source declares instead of forcing a file default, and stage ``LOCAL`` for a
system they cannot name. The loader checks syntax only where it knows one and maps through the
store's vocabulary; any other vocabulary loads with concept 0 and the verbatim source code.

Three spellings of a system reach the adapters: FHIR ``coding.system`` URIs (:data:`FHIR_URIS`),
names in delimited exports such as Synthea's ``SYSTEM`` column (:data:`SYNTHEA_NAMES`), and HL7 v2
coding-system mnemonics of table 0396 (:data:`HL7_NAMES`). Name tables are keyed upper-case.
"""

from __future__ import annotations

from enclave.io.ingest.staging import CodeSystem

SNOMED = CodeSystem.SNOMED.value
LOINC = CodeSystem.LOINC.value
RXNORM = CodeSystem.RXNORM.value
CVX = CodeSystem.CVX.value
ICD10 = CodeSystem.ICD10.value
ICD10CN = CodeSystem.ICD10_CN.value
ICD9PROC = CodeSystem.ICD9_CM_PROC.value
LOCAL = CodeSystem.LOCAL.value
ICD10CM = "ICD10CM"
ICD10PCS = "ICD10PCS"
ICD9CM = "ICD9CM"
NDC = "NDC"
CPT4 = "CPT4"
HCPCS = "HCPCS"
UCUM = "UCUM"

#: Every vocabulary id an adapter stages (OMOP spellings, plus ICD10CN and LOCAL).
VOCABULARY_IDS = (SNOMED, LOINC, RXNORM, CVX, ICD10CM, ICD10, ICD9CM, ICD9PROC, ICD10PCS, NDC, CPT4,
                  HCPCS, UCUM, ICD10CN, LOCAL)

#: Systems the enclave maps to standard concepts through its vocabulary; a CodeableConcept (or an
#: HL7 coded element) with several codings prefers one of these.
MAPPABLE = frozenset({SNOMED, LOINC, RXNORM, CVX, ICD10CM, ICD10, ICD10CN, ICD9PROC})

#: Chinese national code systems (OIDs of the national health information standards).
ICD10CN_SYSTEM = "urn:oid:2.16.156.10011.2.3.3.11"
ICD9PROC_CN_SYSTEM = "urn:oid:2.16.156.10011.2.3.3.12"

#: FHIR ``coding.system`` → vocabulary id: HL7 Terminology's preferred URI, one per vocabulary (the
#: demo FHIR writer inverts this table).
FHIR_URIS: dict[str, str] = {
    "http://snomed.info/sct": SNOMED,
    "http://loinc.org": LOINC,
    "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "http://hl7.org/fhir/sid/cvx": CVX,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "http://hl7.org/fhir/sid/icd-9-cm": ICD9CM,
    "http://www.cms.gov/Medicare/Coding/ICD10": ICD10PCS,
    "http://hl7.org/fhir/sid/ndc": NDC,
    "http://www.ama-assn.org/go/cpt": CPT4,
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    "http://unitsofmeasure.org": UCUM,
    ICD10CN_SYSTEM: ICD10CN,
    ICD9PROC_CN_SYSTEM: ICD9PROC,
}

#: Other spellings of the same systems in ``coding.system``: their OIDs (HL7 Terminology).
FHIR_URI_ALIASES: dict[str, str] = {
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.12.292": CVX,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.103": ICD9CM,
    "urn:oid:2.16.840.1.113883.6.104": ICD9PROC,
    "urn:oid:2.16.840.1.113883.6.4": ICD10PCS,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
    "urn:oid:2.16.840.1.113883.6.12": CPT4,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "urn:oid:2.16.840.1.113883.6.8": UCUM,
}

#: The vocabulary ids themselves, in any case (a source that already writes OMOP spellings).
_OMOP_SPELLINGS: dict[str, str] = {v.upper(): v for v in VOCABULARY_IDS}

#: Synthea ``SYSTEM`` values (upper-cased): Synthea writes its internal names (``SNOMED-CT``,
#: ``LOINC``, ``RxNorm``, ``CVX``; allergies.csv ``Unknown`` for any other) or, from some modules,
#: the FHIR URI. Synthea is a US generator: its ICD-10 is ICD-10-CM.
SYNTHEA_NAMES: dict[str, str] = {
    **_OMOP_SPELLINGS,
    **{uri.upper(): vocab for uri, vocab in {**FHIR_URIS, **FHIR_URI_ALIASES}.items()},
    "SNOMED-CT": SNOMED, "SNOMED CT": SNOMED, "SNOMEDCT": SNOMED, "SCT": SNOMED,
    "ICD-10": ICD10CM, "ICD10": ICD10CM, "ICD-10-CM": ICD10CM,
    "ICD-9-CM": ICD9CM, "ICD-10-PCS": ICD10PCS,
    "CPT": CPT4, "CPT-4": CPT4,
}

#: HL7 v2 coding-system mnemonics (table 0396; CE/CWE components 3 and 6), upper-cased. ``I10`` is
#: WHO ICD-10 and ``I10C`` ICD-10-CM (HL7 Terminology's naming systems). Local systems (``L``,
#: ``99zzz``) and any other name stage as ``LOCAL``.
HL7_NAMES: dict[str, str] = {
    **_OMOP_SPELLINGS,
    "LN": LOINC, "SCT": SNOMED, "SNM": SNOMED, "SNM3": SNOMED, "SNOMED-CT": SNOMED,
    "I10": ICD10, "I10C": ICD10CM, "ICD10CM": ICD10CM, "I10P": ICD10PCS, "I9C": ICD9CM,
    "I9CDX": ICD9CM, "I9CP": ICD9PROC, "I10CN": ICD10CN, "I9CCN": ICD9PROC, "C4": CPT4, "RXNORM": RXNORM,
    "L": LOCAL,
}
