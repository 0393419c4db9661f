"""STSP (speech-text sentiment preservation): manifests, prompts, classifiers, the run and its report
(see `spiritlm_jax.evaluation.stsp.run` for the protocol)."""

from spiritlm_jax.evaluation.stsp.classifiers import (
    TOKENIZER_FILES,
    HFAudioClassifier,
    HFTextClassifier,
    classify,
    parse_label_map,
    resolve_labels,
)
from spiritlm_jax.evaluation.stsp.manifest import (
    DIRECTIONS,
    EMOTION_TO_SENTIMENT,
    FEWSHOT_FILES,
    LABEL_TO_SENTIMENT,
    SAMPLE_RATE,
    SENTIMENTS,
    StspItem,
    default_data_root,
    default_fewshot_dir,
    load_fewshot_pool,
    load_manifest,
    release_root,
)
from spiritlm_jax.evaluation.stsp.prompts import (
    build_query,
    fewshot_prefix,
    fewshot_segments,
    query_prompt,
    query_segments,
)
from spiritlm_jax.evaluation.stsp.report import STSP_COLUMNS, accuracy_stats, write_stsp_report
from spiritlm_jax.evaluation.stsp.run import (
    PINNED,
    StspConfig,
    StspRunConfig,
    check_requirements,
    classify_prompts,
    run_stsp,
    run_stsp_command,
)

__all__ = [
    "DIRECTIONS",
    "EMOTION_TO_SENTIMENT",
    "FEWSHOT_FILES",
    "LABEL_TO_SENTIMENT",
    "PINNED",
    "SAMPLE_RATE",
    "SENTIMENTS",
    "STSP_COLUMNS",
    "TOKENIZER_FILES",
    "HFAudioClassifier",
    "HFTextClassifier",
    "StspConfig",
    "StspItem",
    "StspRunConfig",
    "accuracy_stats",
    "build_query",
    "check_requirements",
    "classify",
    "classify_prompts",
    "default_data_root",
    "default_fewshot_dir",
    "fewshot_prefix",
    "fewshot_segments",
    "load_fewshot_pool",
    "load_manifest",
    "parse_label_map",
    "query_prompt",
    "query_segments",
    "release_root",
    "resolve_labels",
    "run_stsp",
    "run_stsp_command",
    "write_stsp_report",
]
