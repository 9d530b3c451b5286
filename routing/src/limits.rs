//! Upper bounds on what a service may contain, so one bad write cannot exhaust a proxy.

/// Service and version names.
pub const MAX_NAME_LEN: usize = 63;
pub const MAX_HOSTS: usize = 64;
pub const MAX_HOST_LEN: usize = 253;
pub const MAX_PATH_PREFIX_LEN: usize = 256;
pub const MAX_VERSIONS: usize = 64;
pub const MAX_ENDPOINTS: usize = 256;
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;
pub const MAX_CONCURRENT: u32 = 1_000_000;
pub const MAX_REQUEST_VOLUME: u32 = 1_000_000;
pub const MAX_SLEEP_WINDOW_MS: u32 = 3_600_000;
pub const MIN_WINDOW_MS: u32 = 1_000;
pub const MAX_WINDOW_MS: u32 = 600_000;
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1_000;
pub const MAX_EJECTION_MS: u32 = 3_600_000;
/// Extra tries of one request.
pub const MAX_RETRY_ATTEMPTS: u32 = 5;
pub const MAX_RULES: usize = 256;
pub const MAX_CONDITIONS: usize = 32;
/// Header, cookie and query names.
pub const MAX_FIELD_NAME_LEN: usize = 256;
/// Values compared by `exact`, `prefix` and `one_of`.
pub const MAX_VALUE_LEN: usize = 4096;
pub const MAX_ONE_OF: usize = 1024;
pub const MAX_REGEX_LEN: usize = 1024;
/// Memory a compiled regex may use (the `regex` crate's size limit).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
pub const MAX_CIDRS: usize = 1024;
/// Basis points in a whole split.
pub const TOTAL_WEIGHT: u32 = 10_000;
/// Mirrored requests in flight to one version per proxy.
pub const MAX_MIRROR_IN_FLIGHT: u32 = 10_000;
/// Largest request body a proxy buffers for a mirrored copy.
pub const MAX_MIRROR_BODY_BYTES: u32 = 16 * 1024 * 1024;
/// Application events a service declares.
pub const MAX_EVENTS: usize = 8;
