//! The AWS Lambda adapter: a backend that invokes a function with `Invoke`, the request mapped
//! to an API Gateway event ([`event`]) and the function's output mapped back to an HTTP
//! response ([`response`]).
//!
//! It is a [`Backend`] like any other: the route's retries, retry budget, failover and the SLA
//! engine see its outcomes, classified as [`BackendError`]s — a function error is
//! [`BackendErrorKind::FunctionError`], `TooManyRequestsException` is
//! [`BackendErrorKind::Throttled`] with its retry-after, an unknown function is
//! [`BackendErrorKind::Config`], a request body over the synchronous payload limit is refused
//! before invoking ([`BackendErrorKind::BodyTooLarge`]).
//!
//! Clients are shared: one `aws-sdk-lambda` client per region, endpoint and credential set
//! ([`clients`]), with the SDK's connection pool and credential cache (credentials are
//! refreshed by the SDK, never fetched per request). The SDK's own retries are off: retrying is
//! the route's job.

pub mod clients;
pub mod event;
pub mod response;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use tower::Service;

use crate::backend::{
    Availability, Backend, BackendFuture, BackgroundTasks, BuildError, EndpointCounts,
    GatewayRequest, GatewayResponse, Provider,
};
use crate::body::{RequestBody, full_body};
use crate::error::{BackendError, BackendErrorKind};
use crate::outlier::{FailureEffect, OutlierDetector, OutlierPolicy};
use crate::secret::Secret;
use crate::stats::BackendStats;

pub use clients::LambdaClient;

/// Lambda's limit on a synchronous invocation's request payload.
pub const SYNC_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// Lambda's limit on an asynchronous (`Event`) invocation's request payload.
pub const ASYNC_PAYLOAD_LIMIT: usize = 1024 * 1024;

/// A Lambda backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaBackendConfig {
    /// The function's name or ARN (a partial ARN, or a full one with its region).
    pub function: String,
    /// A version or alias.
    pub qualifier: Option<String>,
    /// The function's region; default: the ARN's, else the credential chain's (`AWS_REGION`,
    /// the profile).
    pub region: Option<String>,
    /// The API Gateway event format the function expects.
    pub payload_format: PayloadFormat,
    /// Wait for the function's answer, or queue the event and answer 202.
    pub invocation: Invocation,
    /// Another Invoke endpoint (a local emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// How the gateway authenticates to AWS.
    pub credentials: LambdaCredentials,
    /// `requestContext.stage` in the event.
    pub stage: String,
    /// How long one invocation may take (function time included); none: the route's
    /// per-try timeout alone bounds it.
    pub timeout: Option<Duration>,
}

/// The API Gateway payload format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// HTTP API 1.0 (REST-API-compatible, with `multiValueHeaders`).
    V1,
    /// HTTP API 2.0.
    #[default]
    V2,
}

/// The invocation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Invocation {
    /// `RequestResponse`: the function's output is the response.
    #[default]
    RequestResponse,
    /// `Event`: queued; the client gets 202 at once.
    Event,
}

/// Where the gateway's AWS credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LambdaCredentials {
    /// The default chain: environment, shared profile, web identity (IRSA), ECS container
    /// credentials, instance metadata.
    #[default]
    Default,
    /// A named profile of the shared config and credentials files.
    Profile {
        /// Profile name.
        name: String,
        /// A credentials file instead of `~/.aws/credentials`.
        credentials_file: Option<std::path::PathBuf>,
        /// A config file instead of `~/.aws/config`.
        config_file: Option<std::path::PathBuf>,
    },
    /// Keys read from the environment or files named in the configuration.
    Static {
        /// Access key id.
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token, for temporary keys.
        session_token: Option<Secret>,
    },
    /// A role assumed with STS, with credentials from `source`.
    AssumeRole {
        /// The role's ARN.
        role_arn: String,
        /// The external id the role's trust policy requires.
        external_id: Option<String>,
        /// Session name (default `accord`).
        session_name: Option<String>,
        /// Another STS endpoint.
        sts_endpoint: Option<String>,
        /// The credentials that assume the role.
        source: Box<LambdaCredentials>,
    },
}

/// Builds a Lambda backend. Fails when no region can be found for the function.
pub async fn build(
    id: &str,
    config: LambdaBackendConfig,
    stats: Arc<BackendStats>,
) -> Result<Backend, BuildError> {
    let client = clients::client(&config)
        .await
        .map_err(|message| BuildError::new(id, message))?;
    let shared = Arc::new(Shared {
        id: id.into(),
        client,
        config,
        outlier: OutlierDetector::default(),
        stats: stats.clone(),
    });
    let service = LambdaService {
        shared: shared.clone(),
    };
    // The event carries the source IP, the route key and the path parameters.
    Ok(Backend::new(
        id,
        Provider::Lambda,
        service,
        shared,
        stats,
        BackgroundTasks::default(),
    )
    .reading_context(true))
}

struct Shared {
    id: Arc<str>,
    client: LambdaClient,
    config: LambdaBackendConfig,
    /// Passive ejection, as an HTTP endpoint has: a function that keeps failing or throttling
    /// is taken out of its routes' rotation for a while (failover sends its traffic on).
    outlier: OutlierDetector,
    stats: Arc<BackendStats>,
}

/// A function is one endpoint: available unless passive ejection took it out.
impl Availability for Shared {
    fn endpoint_counts(&self) -> EndpointCounts {
        EndpointCounts {
            total: 1,
            available: usize::from(!self.outlier.is_ejected()),
        }
    }
}

/// The tower service that invokes the function.
#[derive(Clone)]
struct LambdaService {
    shared: Arc<Shared>,
}

impl Service<GatewayRequest> for LambdaService {
    type Response = GatewayResponse;
    type Error = BackendError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let result = shared.invoke(request).await;
            shared.judge(&result);
            result
        })
    }
}

impl Shared {
    /// Feeds a try's outcome to passive ejection: failures of the function or of Lambda count,
    /// the caller's own (a too-large body, refused credentials, a misconfiguration) do not.
    fn judge(&self, result: &Result<GatewayResponse, BackendError>) {
        let failed = match result {
            Ok(response) => response.status().is_server_error(),
            Err(error) => matches!(
                error.kind(),
                BackendErrorKind::FunctionError
                    | BackendErrorKind::ServiceError
                    | BackendErrorKind::Throttled
                    | BackendErrorKind::Timeout
                    | BackendErrorKind::Connect
                    | BackendErrorKind::Reset
                    | BackendErrorKind::InvalidResponse
            ),
        };
        if !failed {
            self.outlier.record_success();
        } else if let FailureEffect::Ejected(duration) =
            self.outlier.record_failure(&OutlierPolicy::default())
        {
            self.stats
                .ejections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(backend = %self.id, function = %self.config.function, ?duration, "function ejected after consecutive failures");
        }
    }

    async fn invoke(&self, request: GatewayRequest) -> Result<GatewayResponse, BackendError> {
        let limit = match self.config.invocation {
            Invocation::RequestResponse => SYNC_PAYLOAD_LIMIT,
            Invocation::Event => ASYNC_PAYLOAD_LIMIT,
        };
        let (parts, body) = request.into_parts();
        let body = read_body(body, limit).await?;
        let payload = event::build(
            &parts,
            &body,
            self.config.payload_format,
            &self.config.stage,
        );
        if payload.len() > limit {
            return Err(BackendError::new(
                BackendErrorKind::BodyTooLarge,
                format!(
                    "the event for function {} is {} bytes, over Lambda's {} byte payload limit",
                    self.config.function,
                    payload.len(),
                    limit
                ),
            ));
        }
        let invoke = self
            .client
            .sdk()
            .invoke()
            .function_name(&self.config.function)
            .set_qualifier(self.config.qualifier.clone())
            .invocation_type(match self.config.invocation {
                Invocation::RequestResponse => InvocationType::RequestResponse,
                Invocation::Event => InvocationType::Event,
            })
            .payload(Blob::new(payload))
            .send();
        let result = match self.config.timeout {
            None => invoke.await,
            Some(limit) => tokio::time::timeout(limit, invoke).await.map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Timeout,
                    format!(
                        "function {} did not answer within its timeout of {limit:?}",
                        self.config.function
                    ),
                )
            })?,
        };
        let output = result.map_err(|e| self.classify(e))?;
        if let Some(kind) = output.function_error() {
            let detail = output
                .payload()
                .map(|p| response::function_error_summary(p.as_ref()))
                .unwrap_or_default();
            return Err(BackendError::new(
                BackendErrorKind::FunctionError,
                format!(
                    "function {} raised an error ({kind}){detail}",
                    self.config.function
                ),
            ));
        }
        if self.config.invocation == Invocation::Event {
            let mut response = http::Response::new(full_body(Bytes::new()));
            *response.status_mut() = http::StatusCode::ACCEPTED;
            return Ok(response.into());
        }
        let payload = output.payload().map(|p| p.as_ref()).unwrap_or_default();
        response::map(payload, self.config.payload_format).map_err(|message| {
            BackendError::new(
                BackendErrorKind::InvalidResponse,
                format!(
                    "function {}'s output cannot be mapped to an HTTP response: {message}",
                    self.config.function
                ),
            )
        })
    }

    /// Turns an SDK failure into the gateway's failure classes.
    fn classify(&self, error: SdkError<InvokeError>) -> BackendError {
        let function = &self.config.function;
        let chain = DisplayErrorContext(&error).to_string();
        match error {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let error = service.into_err();
                let code = error.code().unwrap_or("unknown").to_owned();
                let message = error.message().unwrap_or_default().to_owned();
                match error {
                    InvokeError::TooManyRequestsException(throttle) => {
                        let mut e = BackendError::new(
                            BackendErrorKind::Throttled,
                            format!(
                                "Lambda throttled function {function} ({}): {message}",
                                throttle
                                    .reason()
                                    .map(|r| r.as_str().to_owned())
                                    .unwrap_or_else(|| code.clone())
                            ),
                        );
                        if let Some(seconds) = throttle
                            .retry_after_seconds()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                        {
                            e = e.with_retry_after(Duration::from_secs(seconds));
                        }
                        e
                    }
                    InvokeError::Ec2ThrottledException(_) => BackendError::new(
                        BackendErrorKind::Throttled,
                        format!("Lambda throttled function {function} ({code}): {message}"),
                    ),
                    InvokeError::ResourceNotFoundException(_) => {
                        tracing::error!(backend = %self.id, function = %function, "configuration error: Lambda has no such function (or qualifier) in this region and account: {message}");
                        BackendError::new(
                            BackendErrorKind::Config,
                            format!("Lambda has no function {function}: {message}"),
                        )
                    }
                    InvokeError::RequestTooLargeException(_) => BackendError::new(
                        BackendErrorKind::BodyTooLarge,
                        format!("Lambda refused the event for {function} as too large: {message}"),
                    ),
                    _ if is_auth_code(&code) => BackendError::new(
                        BackendErrorKind::Auth,
                        format!(
                            "AWS refused the gateway's credentials for function {function} ({code}): {message}"
                        ),
                    ),
                    _ => {
                        let kind = service_error_kind(&code, status);
                        if kind == BackendErrorKind::Config {
                            tracing::error!(backend = %self.id, function = %function, "configuration error: Lambda refused to invoke the function ({code}): {message}");
                        }
                        let what = match kind {
                            BackendErrorKind::FunctionError => "the function failed",
                            BackendErrorKind::Config => {
                                "the function or its setup is misconfigured"
                            }
                            BackendErrorKind::Throttled => "Lambda throttled",
                            _ => "Lambda's service failed",
                        };
                        BackendError::new(
                            kind,
                            format!(
                                "{what} invoking function {function} ({code}, HTTP {status}): {message}"
                            ),
                        )
                    }
                }
            }
            SdkError::TimeoutError(_) => BackendError::new(
                BackendErrorKind::Timeout,
                format!("invoking function {function} timed out"),
            ),
            SdkError::DispatchFailure(failure) => {
                let kind = if failure.is_timeout() {
                    BackendErrorKind::Timeout
                } else if failure.is_io() {
                    BackendErrorKind::Connect
                } else {
                    // Credentials that cannot be loaded, an endpoint that cannot be resolved.
                    BackendErrorKind::Config
                };
                BackendError::new(
                    kind,
                    format!("cannot reach Lambda for function {function}: {chain}"),
                )
            }
            SdkError::ResponseError(_) => BackendError::new(
                BackendErrorKind::InvalidResponse,
                format!("Lambda's answer for function {function} is unreadable: {chain}"),
            ),
            _ => BackendError::new(
                BackendErrorKind::Config,
                format!("cannot invoke function {function}: {chain}"),
            ),
        }
    }
}

/// What a Lambda service error other than the ones the SDK models specially is, from its error
/// type (Invoke's documented errors) and, for types not listed, its HTTP status.
fn service_error_kind(code: &str, status: u16) -> BackendErrorKind {
    match code {
        // The function's runtime or its resources failed: the function's fault.
        "InvalidRuntimeResponseException"
        | "EFSIOException"
        | "EFSMountConnectivityException"
        | "EFSMountFailureException"
        | "EFSMountTimeoutException"
        | "SnapStartException"
        | "SnapStartTimeoutException"
        | "RecursiveInvocationException" => BackendErrorKind::FunctionError,
        // The function cannot run as configured (keys, network, the event the gateway built).
        "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "InvalidSubnetIDException"
        | "InvalidSecurityGroupIDException"
        | "InvalidZipFileException"
        | "InvalidRequestContentException"
        | "InvalidParameterValueException"
        | "UnsupportedMediaTypeException" => BackendErrorKind::Config,
        // Lambda itself, or capacity it could not find for the call: worth another try.
        "ServiceException"
        | "ResourceConflictException"
        | "ResourceNotReadyException"
        | "ENILimitReachedException"
        | "SubnetIPAddressLimitReachedException"
        | "SnapStartNotReadyException" => BackendErrorKind::ServiceError,
        _ => match status {
            429 => BackendErrorKind::Throttled,
            500..=599 => BackendErrorKind::ServiceError,
            _ => BackendErrorKind::Config,
        },
    }
}

/// Error codes AWS uses when it refuses the caller's identity.
fn is_auth_code(code: &str) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "AccessDeniedException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "SignatureDoesNotMatch"
    )
}

/// Reads the whole request body, refusing one over `limit` (413 before invoking).
async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, BackendError> {
    use http_body_util::BodyExt;
    if let Some(bytes) = body.as_bytes() {
        if bytes.len() > limit {
            return Err(too_large(limit));
        }
        return Ok(bytes.clone());
    }
    let mut collected = bytes::BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            BackendError::new(
                BackendErrorKind::ClientBody,
                "the request body could not be read",
            )
            .with_source(e)
        })?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() > limit {
                return Err(too_large(limit));
            }
        }
    }
    Ok(collected.freeze())
}

fn too_large(limit: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::BodyTooLarge,
        format!("the request body is over Lambda's payload limit of {limit} bytes"),
    )
}
