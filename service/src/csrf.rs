//! The CSRF check of a form posted within a session, as an extractor. A handler that changes
//! anything takes [`CsrfForm`] for its form, and can only get the form through the check: no
//! handler can forget it.

use axum::extract::{FromRequest, FromRequestParts, RawForm, Request};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

/// A session whose forms carry a token of its own in their `csrf` field.
pub trait CsrfSession: Sized + Send {
    /// The token this session's forms carry.
    fn csrf_token(&self) -> &str;
    /// The answer to a form without this session's token: posted from another site, or from a
    /// page of an ended session.
    fn forged(&self) -> Response;
}

/// A form posted within a session: the session first (its own rejection when there is none),
/// then the form's `csrf` field compared in constant time with the session's token, and only
/// then the form read as `T` (axum's `Form` rejections). `T` ignores the `csrf` field.
#[derive(Debug)]
pub struct CsrfForm<Session, T = NoFields> {
    pub session: Session,
    pub form: T,
}

/// The form of a button that posts nothing but its token.
#[derive(Debug, Default, Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

impl<S, Session, T> FromRequest<S> for CsrfForm<Session, T>
where
    S: Send + Sync,
    Session: CsrfSession + FromRequestParts<S>,
    Session::Rejection: IntoResponse,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let RawForm(bytes) = RawForm::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let read = |bytes: axum::body::Bytes| {
            Request::builder()
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(bytes))
                .unwrap_or_default()
        };
        let token = axum::Form::<Token>::from_request(read(bytes.clone()), state).await.map(|f| f.0.csrf);
        let expected = session.csrf_token().as_bytes();
        if !token.is_ok_and(|t| !expected.is_empty() && bool::from(t.as_bytes().ct_eq(expected))) {
            return Err(session.forged());
        }
        let axum::Form(form) =
            axum::Form::<T>::from_request(read(bytes), state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { session, form })
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::request::Parts;
    use axum::http::{HeaderValue, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::*;

    /// A session named by an `x-session` header, whose token is `token-<name>`.
    struct Session {
        token: String,
    }

    impl<S: Send + Sync> FromRequestParts<S> for Session {
        type Rejection = StatusCode;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
            let name = parts.headers.get("x-session").and_then(|v| v.to_str().ok()).ok_or(StatusCode::SEE_OTHER)?;
            Ok(Self { token: format!("token-{name}") })
        }
    }

    impl CsrfSession for Session {
        fn csrf_token(&self) -> &str {
            &self.token
        }

        fn forged(&self) -> Response {
            StatusCode::FORBIDDEN.into_response()
        }
    }

    #[derive(Deserialize)]
    struct Edit {
        payload: String,
        #[serde(default)]
        confirm: Option<u64>,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/edit",
                post(|CsrfForm { form, .. }: CsrfForm<Session, Edit>| async move {
                    format!("{} {:?}", form.payload, form.confirm)
                }),
            )
            .route("/delete", post(|_: CsrfForm<Session>| async { "deleted" }))
    }

    async fn post_form(path: &str, session: Option<&str>, body: &'static str) -> (StatusCode, String) {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(name) = session {
            request = request.header("x-session", HeaderValue::from_str(name).unwrap());
        }
        let response = app().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_form_without_its_sessions_token_is_refused_before_it_is_read() {
        for (path, body) in [
            ("/delete", ""),
            ("/delete", "csrf="),
            ("/delete", "csrf=token-bo"),
            ("/delete", "csrf=token-ana%00"),
            ("/edit", "payload=x"),
            ("/edit", "payload=x&csrf=forged"),
            // Refused for its token before the bad `confirm` is read.
            ("/edit", "payload=x&confirm=many"),
        ] {
            assert_eq!(post_form(path, Some("ana"), body).await.0, StatusCode::FORBIDDEN, "{path} {body}");
        }
    }

    #[tokio::test]
    async fn a_form_with_its_sessions_token_is_read() {
        assert_eq!(post_form("/delete", Some("ana"), "csrf=token-ana").await, (StatusCode::OK, "deleted".into()));
        assert_eq!(
            post_form("/edit", Some("ana"), "csrf=token-ana&payload=%7B%7D&confirm=3").await,
            (StatusCode::OK, "{} Some(3)".into())
        );
        let (status, _) = post_form("/edit", Some("ana"), "csrf=token-ana&confirm=3").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a form missing a field is axum's rejection");
    }

    #[tokio::test]
    async fn without_a_session_the_sessions_own_rejection_answers() {
        assert_eq!(post_form("/delete", None, "csrf=token-ana").await.0, StatusCode::SEE_OTHER);
        let response = app()
            .oneshot(Request::post("/delete").header("x-session", "ana").body(Body::from("csrf=token-ana")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "not a form");
    }
}
