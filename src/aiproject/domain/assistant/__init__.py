"""Spec 01's understanding: the service catalogue, classification, extraction, the interview.

The flow (``flow*.py``, ``session*.py``) builds on these, once per process:

    items = load_catalogue(settings.assistant.catalogue_dirs,
                           builtin=settings.assistant.builtin_catalogue)
    catalog = await ServiceCatalog.build(items, await engines.embedding(),
                                         await engines.embedding_gate(),
                                         cache_dir=models_dir / "assistant")  # optional
    extractor = FactExtractor.load()            # blocking: run it in a thread

and per citizen:

    result = await catalog.classify(text)       # result.label is the handshake's `classify`
    # or, with a capable LLM (referee_wanted(settings)), LLMReferee(catalog, llm).classify
    interview = Interview(result.items, info, extractor)
    question = interview.next_question()        # None: the interview is over
    outcome = interview.answer(reply)
    output = interview.output()                 # the storage step's `output`
"""

from aiproject.domain.assistant.catalog import ServiceItem, load_catalogue
from aiproject.domain.assistant.classifier import (
    Candidate,
    Classification,
    Match,
    ServiceCatalog,
    Thresholds,
)
from aiproject.domain.assistant.errors import AssistantError, CatalogueError, InterviewError
from aiproject.domain.assistant.extract import FactExtractor, Finding
from aiproject.domain.assistant.fields import BASIC, REQUIRED, FieldName, FieldValue
from aiproject.domain.assistant.interview import AnswerOutcome, Correction, Interview, Rejection
from aiproject.domain.assistant.record import output, read_known
from aiproject.domain.assistant.referee import LLMReferee, referee_wanted

__all__ = [
    "BASIC",
    "REQUIRED",
    "AnswerOutcome",
    "AssistantError",
    "Candidate",
    "CatalogueError",
    "Classification",
    "Correction",
    "FactExtractor",
    "FieldName",
    "FieldValue",
    "Finding",
    "Interview",
    "InterviewError",
    "LLMReferee",
    "Match",
    "Rejection",
    "ServiceCatalog",
    "ServiceItem",
    "Thresholds",
    "load_catalogue",
    "output",
    "read_known",
    "referee_wanted",
]
