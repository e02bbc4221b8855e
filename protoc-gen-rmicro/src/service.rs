//! Service code: client, handler trait, register function, name constants, endpoint metadata.
//!
//! prost-build calls [`ServiceGen`] once per `service` it meets, with names and Rust type paths
//! already resolved (extern paths included); the code is built with `quote!` and formatted by
//! prost-build's prettyplease pass together with the messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proc_macro2::TokenStream;
use prost_build::{Comments, Method, Service};
use quote::{format_ident, quote};

use crate::http::{Binding, Bindings};
use crate::names::{ident, shouty, snake, upper_camel, Scope};

/// What the service generator shares with the driver in `lib.rs`.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Names already taken in each package's module, keyed by protobuf package.
    pub(crate) scopes: HashMap<String, Scope>,
    /// `google.api.http` bindings per method.
    pub(crate) bindings: Bindings,
    /// Problems found while generating (reported after prost-build returns).
    pub(crate) errors: Vec<String>,
    /// Per package with services: its files and their imports as an encoded
    /// `FileDescriptorSet`, served by the runtime's gRPC reflection.
    pub(crate) descriptor_sets: HashMap<String, Vec<u8>>,
    /// The constant holding each package's descriptor set, once named.
    pub(crate) descriptor_consts: HashMap<String, String>,
    /// How many files prost-build has finished, so a panic can name the file it was on.
    pub(crate) files_done: usize,
}

/// The prost-build service generator.
pub(crate) struct ServiceGen {
    pub(crate) shared: Rc<RefCell<Shared>>,
    /// The runtime path as tokens, e.g. `::rmicro_runtime`.
    pub(crate) runtime: TokenStream,
    pub(crate) client: bool,
    pub(crate) server: bool,
    /// `disable_comments` patterns: services and methods they select get no comments either.
    pub(crate) disable_comments: Vec<String>,
}

impl prost_build::ServiceGenerator for ServiceGen {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let mut shared = self.shared.borrow_mut();
        let shared = &mut *shared;
        let scope = shared.scopes.entry(service.package.clone()).or_default();
        let descriptors = shared
            .descriptor_consts
            .entry(service.package.clone())
            .or_insert_with(|| scope.claim(&shouty("FileDescriptorSet")))
            .clone();
        match self.service(&service, scope, &shared.bindings, &ident(&descriptors)) {
            Ok(tokens) => buf.push_str(&tokens.to_string()),
            Err(err) => shared.errors.push(err),
        }
    }

    fn finalize(&mut self, _buf: &mut String) {
        self.shared.borrow_mut().files_done += 1;
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        let shared = self.shared.borrow();
        let (Some(name), Some(bytes)) = (
            shared.descriptor_consts.get(package),
            shared.descriptor_sets.get(package),
        ) else {
            return;
        };
        let name = ident(name);
        let literal = proc_macro2::Literal::byte_string(bytes);
        let tokens = quote! {
            /// This package's `.proto` files and their imports as an encoded `FileDescriptorSet`
            /// (comments left out), served by the runtime's gRPC server reflection.
            pub const #name: &[u8] = #literal;
        };
        buf.push_str(&tokens.to_string());
    }
}

/// How a method streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl Kind {
    fn of(method: &Method) -> Kind {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        }
    }

    /// The name of the runtime function that serves or calls this kind.
    fn runtime_fn(self) -> proc_macro2::Ident {
        format_ident!(
            "{}",
            match self {
                Kind::Unary => "unary",
                Kind::ServerStreaming => "server_streaming",
                Kind::ClientStreaming => "client_streaming",
                Kind::Bidi => "streaming",
            }
        )
    }
}

/// Names and types of one method, worked out once and shared by every item.
struct MethodPlan<'a> {
    method: &'a Method,
    kind: Kind,
    /// Rust method name on the client and the handler trait.
    fn_name: proc_macro2::Ident,
    /// Constant holding the gRPC path, inside the service's methods module.
    path_const: proc_macro2::Ident,
    input: syn::Type,
    output: syn::Type,
    docs: TokenStream,
    /// `#[deprecated]` for a method with `option deprecated = true;`, else nothing.
    deprecated: TokenStream,
}

/// Names every RPC method would shadow on the generated client (its own helpers and the methods
/// of the traits it derives); an RPC with one of these names gets a trailing underscore.
const CLIENT_RESERVED: &[&str] = &["new", "clone", "clone_from", "fmt"];

impl ServiceGen {
    fn service(
        &self,
        service: &Service,
        scope: &mut Scope,
        bindings: &Bindings,
        descriptors: &proc_macro2::Ident,
    ) -> Result<TokenStream, String> {
        let rt = &self.runtime;
        let base_camel = heck::ToUpperCamelCase::to_upper_camel_case(service.proto_name.as_str());
        let base_snake = heck::ToSnakeCase::to_snake_case(service.proto_name.as_str());

        let service_const = ident(&scope.claim(&shouty(&format!("{base_camel}ServiceName"))));
        let endpoints_const = ident(&scope.claim(&shouty(&format!("{base_camel}Endpoints"))));
        let methods_mod = ident(&scope.claim(&snake(&format!("{base_snake}_methods"))));
        let client_name = ident(&scope.claim(&upper_camel(&format!("{base_camel}Client"))));
        let handler_name = ident(&scope.claim(&upper_camel(&format!("{base_camel}Handler"))));
        let register_fn = ident(&scope.claim(&snake(&format!("register_{base_snake}_handler"))));

        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };

        let mut fn_scope = Scope::default();
        CLIENT_RESERVED.iter().for_each(|n| fn_scope.reserve(n));
        let mut const_scope = Scope::default();
        let plans = service
            .methods
            .iter()
            .map(|method| {
                let parse = |path: &str| {
                    syn::parse_str::<syn::Type>(path).map_err(|err| {
                        format!(
                            "method `{full_name}.{}` refers to the Rust type `{path}`, which is not a valid type ({err}); check the extern_path parameters",
                            method.proto_name
                        )
                    })
                };
                Ok(MethodPlan {
                    method,
                    kind: Kind::of(method),
                    fn_name: ident(&fn_scope.claim(&snake(&method.proto_name))),
                    path_const: ident(&const_scope.claim(&shouty(&method.proto_name))),
                    input: parse(&method.input_type)?,
                    output: parse(&method.output_type)?,
                    docs: self.docs(
                        &format!(".{full_name}.{}", method.proto_name),
                        &method.comments,
                    ),
                    deprecated: deprecated(method.options.deprecated()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;

        let service_docs = self.docs(&format!(".{full_name}"), &service.comments);
        let path_consts = plans.iter().map(|p| {
            let name = &p.path_const;
            let path = format!("/{full_name}/{}", p.method.proto_name);
            let doc = format!(" gRPC path of `{}`.", p.method.proto_name);
            quote! { #[doc = #doc] pub const #name: &str = #path; }
        });
        let endpoints = plans.iter().map(|p| {
            let path_const = &p.path_const;
            let name = format!("{}.{}", service.proto_name, p.method.proto_name);
            let request = p.method.input_proto_type.trim_start_matches('.');
            let response = p.method.output_proto_type.trim_start_matches('.');
            let (cs, ss) = (p.method.client_streaming, p.method.server_streaming);
            let key = (
                service.package.clone(),
                service.proto_name.clone(),
                p.method.proto_name.clone(),
            );
            let rules = bindings
                .get(&key)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|b| http_rule(rt, b));
            quote! {
                #rt::__codegen::Endpoint {
                    name: #name,
                    path: #methods_mod::#path_const,
                    request: #request,
                    response: #response,
                    client_streaming: #cs,
                    server_streaming: #ss,
                    http: &[#(#rules),*],
                }
            }
        });
        let service_const_doc = format!(" Full gRPC name of the `{}` service.", service.proto_name);
        let methods_doc = format!(
            " gRPC method paths of the `{}` service.",
            service.proto_name
        );
        let endpoints_doc = format!(
            " Endpoint metadata of the `{}` service: one entry per method, with its `google.api.http` bindings.",
            service.proto_name
        );
        let mut out = quote! {
            #[doc = #service_const_doc]
            pub const #service_const: &str = #full_name;

            #[doc = #methods_doc]
            #[allow(dead_code, non_upper_case_globals)]
            pub mod #methods_mod {
                #(#path_consts)*
            }

            #[doc = #endpoints_doc]
            pub const #endpoints_const: &[#rt::__codegen::Endpoint] = &[#(#endpoints),*];
        };

        if self.client {
            out.extend(self.client(&client_name, &methods_mod, &service_docs, &plans, service));
        }
        if self.server {
            out.extend(self.server(
                descriptors,
                &handler_name,
                &register_fn,
                &service_const,
                &endpoints_const,
                &methods_mod,
                &service_docs,
                &plans,
                service,
            ));
        }
        Ok(out)
    }

    fn client(
        &self,
        client_name: &proc_macro2::Ident,
        methods_mod: &proc_macro2::Ident,
        service_docs: &TokenStream,
        plans: &[MethodPlan<'_>],
        service: &Service,
    ) -> TokenStream {
        let rt = &self.runtime;
        let methods = plans.iter().map(|p| {
            let MethodPlan { fn_name, path_const, input, output, docs, kind, deprecated, .. } = p;
            let call = kind.runtime_fn();
            let path = quote! { #methods_mod::#path_const };
            match kind {
                Kind::Unary | Kind::ServerStreaming => {
                    let ret = if *kind == Kind::Unary {
                        quote! { #output }
                    } else {
                        quote! { #rt::__codegen::Streaming<#output> }
                    };
                    quote! {
                        #docs
                        #deprecated
                        pub async fn #fn_name(
                            &self,
                            request: impl #rt::__codegen::IntoRequest<#input>,
                        ) -> ::core::result::Result<#rt::__codegen::Response<#ret>, #rt::__codegen::Status> {
                            self.client
                                .#call::<#input, #output>(
                                    &self.service,
                                    #path,
                                    #rt::__codegen::IntoRequest::into_request(request),
                                )
                                .await
                        }
                    }
                }
                Kind::ClientStreaming | Kind::Bidi => {
                    let ret = if *kind == Kind::ClientStreaming {
                        quote! { #output }
                    } else {
                        quote! { #rt::__codegen::Streaming<#output> }
                    };
                    quote! {
                        #docs
                        #deprecated
                        pub async fn #fn_name(
                            &self,
                            request: impl #rt::__codegen::IntoStreamingRequest<Message = #input>,
                        ) -> ::core::result::Result<#rt::__codegen::Response<#ret>, #rt::__codegen::Status> {
                            self.client
                                .#call::<#input, #output, _>(
                                    &self.service,
                                    #path,
                                    #rt::__codegen::IntoStreamingRequest::into_streaming_request(request),
                                )
                                .await
                        }
                    }
                }
            }
        });
        let struct_doc = format!(
            " Client for the `{}` service: calls it by registry name through an rmicro `Client`.",
            service.proto_name
        );
        let service_deprecated = deprecated(service.options.deprecated());
        // Only where something is deprecated, so other services' code stays as it was.
        // Clippy's lints judge names the `.proto` chose (`into_archive(&self)` breaks its
        // naming conventions): generated code must not warn in the user's crate.
        let allow = if any_deprecated(service, plans) {
            quote! { #[allow(dead_code, deprecated, #CLIPPY)] }
        } else {
            quote! { #[allow(dead_code, #CLIPPY)] }
        };
        // A service without methods never reads the client's fields.
        let unread = plans.is_empty().then(|| quote! { #[allow(dead_code)] });
        quote! {
            #[doc = #struct_doc]
            #[doc = ""]
            #service_docs
            #service_deprecated
            #unread
            #[derive(Clone, Debug)]
            pub struct #client_name {
                client: #rt::__codegen::Client,
                service: ::std::string::String,
            }

            #allow
            impl #client_name {
                /// Creates a client for the service registered as `service` (for example
                /// `go.micro.srv.user`), sending calls through `client`.
                pub fn new(
                    service: impl ::core::convert::Into<::std::string::String>,
                    client: #rt::__codegen::Client,
                ) -> Self {
                    Self { client, service: service.into() }
                }

                #(#methods)*
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server(
        &self,
        descriptors: &proc_macro2::Ident,
        handler_name: &proc_macro2::Ident,
        register_fn: &proc_macro2::Ident,
        service_const: &proc_macro2::Ident,
        endpoints_const: &proc_macro2::Ident,
        methods_mod: &proc_macro2::Ident,
        service_docs: &TokenStream,
        plans: &[MethodPlan<'_>],
        service: &Service,
    ) -> TokenStream {
        let rt = &self.runtime;
        let result = |t: TokenStream| {
            quote! { ::core::result::Result<#rt::__codegen::Response<#t>, #rt::__codegen::Status> }
        };
        let trait_fns = plans.iter().map(|p| {
            let MethodPlan {
                fn_name,
                input,
                output,
                docs,
                kind,
                deprecated,
                ..
            } = p;
            let request = match kind {
                Kind::Unary | Kind::ServerStreaming => quote! { #rt::__codegen::Request<#input> },
                Kind::ClientStreaming | Kind::Bidi => {
                    quote! { #rt::__codegen::Request<#rt::__codegen::Streaming<#input>> }
                }
            };
            let response = match kind {
                Kind::Unary | Kind::ClientStreaming => result(quote! { #output }),
                Kind::ServerStreaming | Kind::Bidi => {
                    result(quote! { #rt::__codegen::ResponseStream<#output> })
                }
            };
            quote! {
                #docs
                #deprecated
                fn #fn_name(
                    &self,
                    request: #request,
                ) -> impl ::core::future::Future<Output = #response> + ::core::marker::Send;
            }
        });
        let routes = plans.iter().map(|p| {
            let MethodPlan {
                fn_name,
                path_const,
                kind,
                ..
            } = p;
            let serve = kind.runtime_fn();
            quote! {
                .#serve(#methods_mod::#path_const, {
                    let handler = #rt::__codegen::Arc::clone(&handler);
                    move |request| {
                        let handler = #rt::__codegen::Arc::clone(&handler);
                        async move { <H as #handler_name>::#fn_name(&*handler, request).await }
                    }
                })
            }
        });
        let trait_doc = format!(
            " Server side of the `{}` service: implement it and register it with [`{register_fn}`].",
            service.proto_name
        );
        let register_doc = format!(
            " Registers `handler` as the `{}` service on `server`.",
            service.proto_name
        );
        let service_deprecated = deprecated(service.options.deprecated());
        let allow = if any_deprecated(service, plans) {
            quote! { #[allow(deprecated, #CLIPPY)] }
        } else {
            quote! { #[allow(#CLIPPY)] }
        };
        // Each method's route holds the handler; a service without methods has nothing to hold
        // it, and an unused `handler` would warn in the user's crate.
        let hold = if plans.is_empty() {
            quote! { let _ = handler; }
        } else {
            quote! { let handler = #rt::__codegen::Arc::new(handler); }
        };
        quote! {
            #[doc = #trait_doc]
            #[doc = ""]
            #service_docs
            #service_deprecated
            #[allow(#CLIPPY)]
            pub trait #handler_name: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#trait_fns)*
            }

            #[doc = #register_doc]
            #[doc = ""]
            #[doc = " # Errors"]
            #[doc = ""]
            #[doc = " When the server already has this service or one of its paths."]
            #allow
            pub fn #register_fn<H: #handler_name>(
                server: &mut #rt::__codegen::Server,
                handler: H,
            ) -> ::core::result::Result<(), #rt::__codegen::RegisterError> {
                #hold
                let service = #rt::__codegen::ServiceDef::new(#service_const, #endpoints_const)
                    .descriptors(#descriptors)
                    #(#routes)*;
                server.add_service(service)
            }
        }
    }
}

/// The clippy lints rmicro's own items are let off: the names and shapes are the `.proto`'s
/// (`into_archive(&self)` breaks clippy's naming conventions), and generated code must not warn
/// in the user's crate, whichever of clippy's groups it turns on.
const CLIPPY: Clippy = Clippy;

/// The tokens of [`CLIPPY`].
struct Clippy;

impl quote::ToTokens for Clippy {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(quote! { clippy::all, clippy::pedantic, clippy::nursery });
    }
}

/// `#[deprecated]` when the `.proto` says `option deprecated = true;`.
fn deprecated(yes: bool) -> TokenStream {
    if yes {
        quote! { #[deprecated] }
    } else {
        TokenStream::new()
    }
}

/// Whether the service or any of its methods is deprecated.
fn any_deprecated(service: &Service, plans: &[MethodPlan<'_>]) -> bool {
    service.options.deprecated() || plans.iter().any(|p| p.method.options.deprecated())
}

fn http_rule(rt: &TokenStream, b: &Binding) -> TokenStream {
    let Binding {
        method,
        path,
        body,
        response_body,
        path_params,
    } = b;
    quote! {
        #rt::__codegen::HttpRule {
            method: #method,
            path: #path,
            body: #body,
            response_body: #response_body,
            path_params: &[#(#path_params),*],
        }
    }
}

/// `#[doc]` attributes for proto comments, sanitized by prost-build (links escaped, code blocks
/// fenced as `text` so they never run as doc tests).
impl ServiceGen {
    /// The doc attributes of the service or method at `path` (`.package.Service[.Method]`), none
    /// when a `disable_comments` pattern selects it, as prost leaves out messages' comments.
    fn docs(&self, path: &str, comments: &Comments) -> TokenStream {
        if self
            .disable_comments
            .iter()
            .any(|pattern| crate::prepare::selects(pattern, path))
        {
            TokenStream::new()
        } else {
            doc_attrs(comments)
        }
    }
}

fn doc_attrs(comments: &Comments) -> TokenStream {
    let mut text = String::new();
    comments.append_with_indent(0, &mut text);
    let lines = text
        .lines()
        .filter_map(|line| line.strip_prefix("///"))
        .map(crate::docs::fence_fix);
    quote! { #(#[doc = #lines])* }
}
