//! Building a stage's node: one function for the first start (before the
//! run begins) and for every restart, with one `BuildContext`, on a thread
//! of its own, within the stage's start-up timeout.

use super::*;

/// Why a node could not be built.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// The node's own error (a missing file, a model that does not load).
    Node(NodeError),
    /// Building panicked.
    Panicked(String),
    /// Building took longer than the stage's `timeout.startup`.
    TimedOut(Duration),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Node(e) => write!(f, "{e}"),
            BuildError::Panicked(m) => write!(f, "building the node panicked: {m}"),
            BuildError::TimedOut(limit) => write!(
                f,
                "start-up timed out: building the node took longer than {limit:?}"
            ),
        }
    }
}

/// Builds the node of `sh`'s stage as incarnation `attempt`, against its
/// state as of its last commit.
pub(crate) async fn build_node(
    sh: &StageShared,
    attempt: u32,
    base_dir: &std::path::Path,
    extensions: &Extensions,
) -> Result<Node, BuildError> {
    let (pipeline, stage) = (sh.pipeline.clone(), sh.stage.name.clone());
    let (config, state, delivery) = (sh.stage.node.clone(), sh.state.clone(), sh.delivery);
    let (base_dir, extensions) = (base_dir.to_owned(), extensions.clone());
    let (resources, metrics) = (sh.stage.resources, sh.metrics.node.clone());
    let windowing = sh.stage.windowing;
    let requests = sh.requests.clone();
    let limit = sh.stage.timeout.startup;
    let build = tokio::task::spawn_blocking(move || {
        let ctx = BuildContext {
            pipeline: &pipeline,
            stage: &stage,
            attempt,
            base_dir: &base_dir,
            extensions: &extensions,
            state: &state,
            delivery,
            resources,
            metrics: &metrics,
            windowing,
            requests: requests.as_ref(),
        };
        config.build(&ctx)
    });
    match tokio::time::timeout(limit, build).await {
        Ok(Ok(node)) => node.map_err(BuildError::Node),
        Ok(Err(e)) => Err(BuildError::Panicked(crate::panic_text(e))),
        Err(_) => {
            sh.metrics.timeouts.fetch_add(1, Relaxed);
            let e = BuildError::TimedOut(limit);
            warn!(stage = %sh.stage.name, "{e}");
            Err(e)
        }
    }
}
