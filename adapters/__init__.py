"""Character adapters: LoRA (peft) and embedding (textual inversion) training, import, and loading on a pipeline.

Never imports `studio`: the worker passes components, pictures and settings in, and stores what comes out.
"""

from adapters.common import ADAPTER_KINDS, LORA_TARGET_MODULES, TrainingResult, default_hyperparameters
from adapters.embedding import EmbeddingTrainingConfig, load_embedding_into, read_embedding, train_embedding
from adapters.importing import AdapterImportError, ImportedLora, import_lora, inspect_lora
from adapters.loading import AdapterSpec, AppliedAdapters, apply_adapters, substitute_triggers
from adapters.lora import LoraTrainingConfig, add_trigger_words, read_lora_metadata, train_lora

__all__ = [
    "ADAPTER_KINDS",
    "LORA_TARGET_MODULES",
    "AdapterImportError",
    "AdapterSpec",
    "AppliedAdapters",
    "EmbeddingTrainingConfig",
    "ImportedLora",
    "LoraTrainingConfig",
    "TrainingResult",
    "add_trigger_words",
    "apply_adapters",
    "default_hyperparameters",
    "import_lora",
    "inspect_lora",
    "load_embedding_into",
    "read_embedding",
    "read_lora_metadata",
    "substitute_triggers",
    "train_embedding",
    "train_lora",
]
