//! Classifies every User-Agent of the uap-core corpus (`shared/corpora/uap-core` beside the
//! repository) `ROUNDS` times without the per-thread cache, for `bench/ua-instructions` to
//! count instructions under callgrind: the classifier's cost on strings it has not seen.
//!
//!   grayline-ua-classify [ROUNDS] [CORPUS_DIR]

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let dir = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/uap-core"),
        PathBuf::from,
    );
    let mut uas = Vec::new();
    for file in ["test_ua.yaml", "test_os.yaml"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        uas.extend(text.lines().filter_map(|line| {
            let ua = line.trim_start().strip_prefix("- user_agent_string: ")?;
            Some(ua.trim_matches(|c| c == '\'' || c == '"').to_string())
        }));
    }
    let mut known = 0usize;
    for _ in 0..rounds {
        for ua in &uas {
            let c = grayline_routing::useragent::classify(std::hint::black_box(ua.as_bytes()));
            known += usize::from(c.browser != grayline_routing::useragent::Browser::Other);
        }
    }
    println!(
        "{{\"user_agents\":{},\"rounds\":{rounds},\"browsers_known\":{known}}}",
        uas.len()
    );
    Ok(())
}
