"""The router's schema: SQLite's ordered migrations since the first release, and PostgreSQL's,
which start at the schema SQLite had reached then (the same tables and columns). A change to the
schema is a new migration at the end of both lists."""

from __future__ import annotations

from router.store.migrations import Migrations

# The shipped seed entries each embedder's pool has ever been given (router/pool/seed.py): a
# release's new ones are added at start, never one the family removed. A database from before
# starts with its seed-labelled rows (what it had removed before the upgrade is not known).
SEED_GIVEN = """
    CREATE TABLE seed_given (
        embedder_id TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        PRIMARY KEY (embedder_id, text_hash)
    );
    INSERT INTO seed_given (embedder_id, text_hash)
        SELECT embedder_id, prompt_hash FROM pool WHERE label_source = 'seed';
    """

# A label held back in quarantine records whose message it was, as a pooled one does, so an
# erasure reaches it (older rows: a conversation's erasure matches their origin, the chat).
QUARANTINE_OWNERS = """
    ALTER TABLE pool_quarantine ADD COLUMN conv_key TEXT;
    ALTER TABLE pool_quarantine ADD COLUMN user_key TEXT;
    CREATE INDEX pool_quarantine_conv ON pool_quarantine (conv_key) WHERE conv_key IS NOT NULL;
    CREATE INDEX pool_quarantine_user ON pool_quarantine (user_key) WHERE user_key IS NOT NULL;
    """

# Each erasure leaves a notice (when, and whose: never a word or a hash of what went) for a
# day, so that the other processes on the database let go of their in-memory copies too
# (router/store/erasure_notices.py).
ERASURE_NOTICES = """
    CREATE TABLE erasure_notices (
        id {id},
        at {real} NOT NULL,
        conv_key TEXT,
        user_key TEXT
    );
    CREATE INDEX erasure_notices_at ON erasure_notices (at);
    """

SQLITE: tuple[str, ...] = (
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE routing_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        conv_key TEXT,
        prompt_hash TEXT NOT NULL,
        prompt TEXT NOT NULL,
        mode TEXT NOT NULL,
        category TEXT,
        tier TEXT NOT NULL,
        tier_mapping_version TEXT NOT NULL,
        confidence REAL,
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        llm_category TEXT,
        llm_confidence REAL,
        llm_latency_ms REAL,
        knn_category TEXT,
        knn_tier TEXT,
        knn_confidence REAL,
        knn_latency_ms REAL,
        prior_category TEXT,
        latency_ms REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        error TEXT
    );
    CREATE INDEX routing_log_at ON routing_log (at);
    CREATE INDEX routing_log_conv ON routing_log (conv_key, id);
    CREATE TABLE pool (
        id INTEGER PRIMARY KEY,
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        label_source TEXT NOT NULL,
        confidence REAL,
        added_at REAL NOT NULL,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE TABLE taxonomy_audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        from_category TEXT,
        to_category TEXT,
        log_rows INTEGER NOT NULL,
        pool_rows INTEGER NOT NULL,
        old_version TEXT,
        new_version TEXT
    );
    """,
    # /reset: the conversation's routing context starts over from this time.
    """
    CREATE TABLE context_resets (
        conv_key TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    """,
    # Every request gets a row (aliases and passthrough models too: tier may be unknown), written
    # once it has ended, with how it ended and a decision id the client sees in a header.
    """
    CREATE TABLE routing_log_v3 (
        id INTEGER PRIMARY KEY,
        decision_id TEXT,
        at REAL NOT NULL,
        conv_key TEXT,
        prompt_hash TEXT NOT NULL,
        prompt TEXT NOT NULL,
        mode TEXT NOT NULL,
        category TEXT,
        tier TEXT,
        tier_mapping_version TEXT NOT NULL,
        confidence REAL,
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        llm_category TEXT,
        llm_confidence REAL,
        llm_latency_ms REAL,
        knn_category TEXT,
        knn_tier TEXT,
        knn_confidence REAL,
        knn_latency_ms REAL,
        prior_category TEXT,
        latency_ms REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        outcome TEXT,
        error TEXT
    );
    INSERT INTO routing_log_v3 (id, at, conv_key, prompt_hash, prompt, mode, category, tier,
        tier_mapping_version, confidence, source, model, llm_category, llm_confidence,
        llm_latency_ms, knn_category, knn_tier, knn_confidence, knn_latency_ms, prior_category,
        latency_ms, prompt_tokens, completion_tokens, error)
    SELECT id, at, conv_key, prompt_hash, prompt, mode, category, tier, tier_mapping_version,
        confidence, source, model, llm_category, llm_confidence, llm_latency_ms, knn_category,
        knn_tier, knn_confidence, knn_latency_ms, prior_category, latency_ms, prompt_tokens,
        completion_tokens, error
    FROM routing_log;
    DROP TABLE routing_log;
    ALTER TABLE routing_log_v3 RENAME TO routing_log;
    CREATE INDEX routing_log_at ON routing_log (at);
    CREATE INDEX routing_log_conv ON routing_log (conv_key, id);
    CREATE UNIQUE INDEX routing_log_decision ON routing_log (decision_id);
    """,
    # A voice message's transcription time, beside the routing latency it came before.
    "ALTER TABLE routing_log ADD COLUMN transcription_ms REAL;",
    # The local classifier as last fitted, with what it was fitted on (see fitted_state.py).
    """
    CREATE TABLE fitted_state (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state BLOB NOT NULL,
        at REAL NOT NULL
    );
    """,
    # The process that wrote a row while its request was still open (NULL once it has ended):
    # a start marks only the open rows of processes no longer running as interrupted.
    "ALTER TABLE routing_log ADD COLUMN open_pid INTEGER;",
    # A start reads the categories in use and the open rows through these, not by scanning the
    # whole log (200,000 rows: 0.25-0.45 s at every start, now under a millisecond).
    """
    CREATE INDEX routing_log_category ON routing_log (category) WHERE category IS NOT NULL;
    CREATE INDEX routing_log_llm_category ON routing_log (llm_category)
        WHERE llm_category IS NOT NULL;
    CREATE INDEX routing_log_knn_category ON routing_log (knn_category)
        WHERE knn_category IS NOT NULL;
    CREATE INDEX routing_log_prior_category ON routing_log (prior_category)
        WHERE prior_category IS NOT NULL;
    CREATE INDEX routing_log_open ON routing_log (open_pid) WHERE open_pid IS NOT NULL;
    CREATE INDEX pool_category ON pool (category);
    """,
    # Who spoke (platform:user id, or a proxy request's user/name): in a group, a turn's context
    # is the same person's previous turn, not whatever anyone said last.
    """
    ALTER TABLE routing_log ADD COLUMN user_key TEXT;
    CREATE INDEX routing_log_conv_user ON routing_log (conv_key, user_key, id)
        WHERE conv_key IS NOT NULL;
    """,
    # Privacy (issue 25): a stored prompt is capped, its full length kept beside it; a pool entry
    # the categorizer taught from a chat message records whose message it was, so /forget and
    # `crabbot forget` can erase it.
    """
    ALTER TABLE routing_log ADD COLUMN prompt_chars INTEGER;
    ALTER TABLE pool ADD COLUMN conv_key TEXT;
    ALTER TABLE pool ADD COLUMN user_key TEXT;
    CREATE INDEX pool_conv ON pool (conv_key) WHERE conv_key IS NOT NULL;
    CREATE INDEX pool_user ON pool (user_key) WHERE user_key IS NOT NULL;
    """,
    # Issue 24: where a learned pool entry came from (its origin: a chat, a conversation, a proxy
    # client key; NULL for the seed and imports), and the quarantine where labels that could
    # steer the pool wait for `crabbot pool review`.
    """
    ALTER TABLE pool ADD COLUMN origin TEXT;
    CREATE INDEX pool_origin ON pool (origin) WHERE origin IS NOT NULL;
    CREATE TABLE pool_quarantine (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        origin TEXT NOT NULL,
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        confidence REAL,
        local_category TEXT,
        local_confidence REAL,
        reason TEXT NOT NULL,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE INDEX pool_quarantine_origin ON pool_quarantine (origin);
    """,
    # Whether the conversation, not the message, named the local signal's answer (live mode's
    # bar is then context.min_confidence): what `/routing stats` counts as "would go live".
    "ALTER TABLE routing_log ADD COLUMN knn_swayed INTEGER;",
    SEED_GIVEN,
    # AUTOINCREMENT: an id is never given again once the notices are cleared (a process
    # that read up to it would skip the new one).
    ERASURE_NOTICES.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL"),
    QUARANTINE_OWNERS,
)


_ID = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
POSTGRESQL: tuple[str, ...] = (
    f"""
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE routing_log (
        id {_ID},
        decision_id TEXT,
        at DOUBLE PRECISION NOT NULL,
        conv_key TEXT,
        prompt_hash TEXT NOT NULL,
        prompt TEXT NOT NULL,
        mode TEXT NOT NULL,
        category TEXT,
        tier TEXT,
        tier_mapping_version TEXT NOT NULL,
        confidence DOUBLE PRECISION,
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        llm_category TEXT,
        llm_confidence DOUBLE PRECISION,
        llm_latency_ms DOUBLE PRECISION,
        knn_category TEXT,
        knn_tier TEXT,
        knn_confidence DOUBLE PRECISION,
        knn_latency_ms DOUBLE PRECISION,
        prior_category TEXT,
        latency_ms DOUBLE PRECISION NOT NULL,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        outcome TEXT,
        error TEXT,
        transcription_ms DOUBLE PRECISION,
        open_pid BIGINT,
        user_key TEXT,
        prompt_chars BIGINT
    );
    CREATE INDEX routing_log_at ON routing_log (at);
    CREATE INDEX routing_log_conv ON routing_log (conv_key, id);
    CREATE UNIQUE INDEX routing_log_decision ON routing_log (decision_id);
    CREATE INDEX routing_log_category ON routing_log (category) WHERE category IS NOT NULL;
    CREATE INDEX routing_log_llm_category ON routing_log (llm_category)
        WHERE llm_category IS NOT NULL;
    CREATE INDEX routing_log_knn_category ON routing_log (knn_category)
        WHERE knn_category IS NOT NULL;
    CREATE INDEX routing_log_prior_category ON routing_log (prior_category)
        WHERE prior_category IS NOT NULL;
    CREATE INDEX routing_log_open ON routing_log (open_pid) WHERE open_pid IS NOT NULL;
    CREATE INDEX routing_log_conv_user ON routing_log (conv_key, user_key, id)
        WHERE conv_key IS NOT NULL;
    CREATE TABLE pool (
        id {_ID},
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BYTEA NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        label_source TEXT NOT NULL,
        confidence DOUBLE PRECISION,
        added_at DOUBLE PRECISION NOT NULL,
        conv_key TEXT,
        user_key TEXT,
        origin TEXT,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE INDEX pool_category ON pool (category);
    CREATE INDEX pool_conv ON pool (conv_key) WHERE conv_key IS NOT NULL;
    CREATE INDEX pool_user ON pool (user_key) WHERE user_key IS NOT NULL;
    CREATE INDEX pool_origin ON pool (origin) WHERE origin IS NOT NULL;
    CREATE TABLE pool_quarantine (
        id {_ID},
        at DOUBLE PRECISION NOT NULL,
        origin TEXT NOT NULL,
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BYTEA NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        confidence DOUBLE PRECISION,
        local_category TEXT,
        local_confidence DOUBLE PRECISION,
        reason TEXT NOT NULL,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE INDEX pool_quarantine_origin ON pool_quarantine (origin);
    CREATE TABLE taxonomy_audit (
        id {_ID},
        at DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL,
        from_category TEXT,
        to_category TEXT,
        log_rows BIGINT NOT NULL,
        pool_rows BIGINT NOT NULL,
        old_version TEXT,
        new_version TEXT
    );
    CREATE TABLE context_resets (
        conv_key TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE fitted_state (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state BYTEA NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    """,
    "ALTER TABLE routing_log ADD COLUMN knn_swayed INTEGER;",
    SEED_GIVEN,
    ERASURE_NOTICES.format(id=_ID, real="DOUBLE PRECISION"),
    QUARANTINE_OWNERS,
)

ROUTER_MIGRATIONS = Migrations(sqlite=SQLITE, postgresql=POSTGRESQL)
