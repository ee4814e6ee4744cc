//! `#[interface]`: one declaration of an ABI interface gives its four layers.
//!
//! The input is the plain Rust trait a backend implements (`BackendGic`, `BackendVcpu`, …), with
//! `#[abi(...)]` attributes where the ABI's side differs from the plain one. From it come:
//!
//! - the trait itself, as backends implement it;
//! - the `#[sabi_trait]` interface that crosses the boundary, with its `#[sabi(last_prefix_field)]`
//!   and, for every method added after it, the default an older plugin's table falls back to;
//! - the adapter that implements the ABI interface over a backend object, converting records
//!   and running every call under the panic guard;
//! - the host's client handle, with `Result`-returning methods in the plain types;
//! - the box alias the interface crosses in, and the conversions between the layers.
//!
//! The macro is used by `accel-api` alone: the generated code names that crate's items by
//! `crate::` paths.
//!
//! # Attributes
//!
//! On the trait: `#[interface(abi = GicOps, boxed = GicBox, client = Gic, bounds(Send + Sync),
//! holds = Arc<dyn BackendGic>)]`. `holds = own` wraps a backend's own value (the accelerator, a
//! VM, a vCPU); a type is what the backend hands out (an extension). `borrowed` marks an
//! interface borrowed from its vCPU (its box and client carry a lifetime `'a`).
//!
//! On a method, `#[abi(...)]` with any of:
//! - `name = ident`: the method's name on the ABI and the client (default: the trait's name);
//! - `op = "text"`: how a panic names the operation (default: the trait's name);
//! - `ret = Type, client = Type`: the ABI's return type and the client's (inside `Result`), when
//!   they are not the plain type; the conversions are `IntoAbi` and `FromAbi`;
//! - `or_else = |error| value`: what an infallible method returns when the backend panics
//!   (default: `Default::default()`);
//! - `last`: the last method of ABI 2.0 (`#[sabi(last_prefix_field)]`);
//! - `since = "2.x", what = "doing it"`: a method added after `last`. The plain trait gives its
//!   default body; an older plugin's missing method answers `unsupported` naming `what`.
//!
//! On an argument, `#[abi(&Record)]` gives the ABI type of a plain `&Type` argument; the host
//! converts with `From<&Type>`, the plugin with `ToPlain`. `&[T]` crosses as `RSlice`,
//! `Option<T>` as `ROption`, `Vec<T>` as `RVec`; everything else as it is.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{
    parse::Parser, parse_macro_input, parse_quote, punctuated::Punctuated, spanned::Spanned, Attribute,
    Error, Expr, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, ReturnType, Token,
    TraitItem, TraitItemFn, Type, TypeParamBound,
};

/// What the trait's `#[interface(...)]` says.
struct Interface {
    abi: Ident,
    boxed: Ident,
    client: Ident,
    bounds: Punctuated<TypeParamBound, Token![+]>,
    holds: Option<Type>,
    borrowed: bool,
}

fn parse_interface(attr: TokenStream) -> syn::Result<Interface> {
    let (mut abi, mut boxed, mut client, mut holds, mut own) = (None, None, None, None, false);
    let mut bounds = Punctuated::new();
    let mut borrowed = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("abi") {
            abi = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("boxed") {
            boxed = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("client") {
            client = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("bounds") {
            let content;
            syn::parenthesized!(content in meta.input);
            bounds = Punctuated::parse_terminated(&content)?;
        } else if meta.path.is_ident("holds") {
            let ty: Type = meta.value()?.parse()?;
            if matches!(&ty, Type::Path(p) if p.path.is_ident("own")) {
                own = true;
            } else {
                holds = Some(ty);
            }
        } else if meta.path.is_ident("borrowed") {
            borrowed = true;
        } else {
            return Err(meta.error("expected abi, boxed, client, bounds, holds or borrowed"));
        }
        Ok(())
    });
    parser.parse(attr)?;
    let missing =
        |what: &str| Error::new(proc_macro2::Span::call_site(), format!("#[interface] needs `{what}`"));
    if holds.is_none() && !own {
        return Err(missing("holds"));
    }
    Ok(Interface {
        abi: abi.ok_or_else(|| missing("abi"))?,
        boxed: boxed.ok_or_else(|| missing("boxed"))?,
        client: client.ok_or_else(|| missing("client"))?,
        bounds,
        holds,
        borrowed,
    })
}

/// What a method's `#[abi(...)]` says.
#[derive(Default)]
struct MethodAbi {
    name: Option<Ident>,
    op: Option<LitStr>,
    ret: Option<Type>,
    client: Option<Type>,
    or_else: Option<Expr>,
    last: bool,
    since: Option<LitStr>,
    what: Option<LitStr>,
}

fn is_abi(attr: &Attribute) -> bool {
    attr.path().is_ident("abi")
}

fn parse_method_abi(attrs: &[Attribute]) -> syn::Result<MethodAbi> {
    let mut out = MethodAbi::default();
    for attr in attrs.iter().filter(|a| is_abi(a)) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                out.name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("op") {
                out.op = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("ret") {
                out.ret = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("client") {
                out.client = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("or_else") {
                out.or_else = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("last") {
                out.last = true;
            } else if meta.path.is_ident("since") {
                out.since = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("what") {
                out.what = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected name, op, ret, client, or_else, last, since or what"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The one generic argument of `ty` when it is `Name<T>`.
fn generic_of<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first()? {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// How one argument crosses.
enum ArgKind {
    /// The same type on both sides.
    Same,
    /// `&Plain` as `&Record`.
    Record(Type),
    /// `&[T]` as `RSlice<'_, T>`.
    Slice(Type),
    /// `Option<T>` as `ROption<T>`.
    Option(Type),
}

struct Arg {
    name: Ident,
    plain: Type,
    kind: ArgKind,
}

impl Arg {
    fn abi_type(&self) -> Tokens {
        match &self.kind {
            ArgKind::Same => {
                let plain = &self.plain;
                quote!(#plain)
            }
            ArgKind::Record(record) => quote!(&#record),
            ArgKind::Slice(elem) => quote!(::abi_stable::std_types::RSlice<'_, #elem>),
            ArgKind::Option(inner) => quote!(::abi_stable::std_types::ROption<#inner>),
        }
    }

    /// The host's conversion into a temporary, and the expression passed to the ABI.
    fn host_pass(&self) -> (Tokens, Tokens) {
        let name = &self.name;
        match &self.kind {
            ArgKind::Same => (quote!(), quote!(#name)),
            ArgKind::Record(record) => (quote!(let #name = <#record>::from(#name);), quote!(&#name)),
            ArgKind::Slice(_) | ArgKind::Option(_) => (quote!(), quote!(#name.into())),
        }
    }

    /// The plugin's conversion into a temporary, and the expression passed to the backend.
    fn plugin_pass(&self) -> (Tokens, Tokens) {
        let name = &self.name;
        match &self.kind {
            ArgKind::Same => (quote!(), quote!(#name)),
            ArgKind::Record(_) => {
                (quote!(let #name = crate::abi::cross::ToPlain::to_plain(#name)?;), quote!(&#name))
            }
            ArgKind::Slice(_) => (quote!(), quote!(#name.as_slice())),
            ArgKind::Option(_) => (quote!(), quote!(#name.into_option())),
        }
    }
}

/// How the return value crosses.
enum RetKind {
    /// `()`.
    Unit,
    /// The same type on both sides.
    Same(Type),
    /// Declared: the ABI type and the client's.
    Declared { abi: Box<Type>, client: Box<Type> },
    /// `Vec<T>` as `RVec<T>`.
    Vec(Type),
    /// `Option<T>` as `ROption<T>`.
    Option(Type),
}

impl RetKind {
    fn abi_type(&self) -> Tokens {
        match self {
            RetKind::Unit => quote!(()),
            RetKind::Same(t) => quote!(#t),
            RetKind::Declared { abi, .. } => quote!(#abi),
            RetKind::Vec(t) => quote!(::abi_stable::std_types::RVec<#t>),
            RetKind::Option(t) => quote!(::abi_stable::std_types::ROption<#t>),
        }
    }

    fn client_type(&self) -> Tokens {
        match self {
            RetKind::Unit => quote!(()),
            RetKind::Same(t) => quote!(#t),
            RetKind::Declared { client, .. } => quote!(#client),
            RetKind::Vec(t) => quote!(::std::vec::Vec<#t>),
            RetKind::Option(t) => quote!(::core::option::Option<#t>),
        }
    }

    /// Plain value `v` into the ABI's.
    fn plugin_conversion(&self) -> Tokens {
        match self {
            RetKind::Unit | RetKind::Same(_) => quote!(v),
            RetKind::Declared { abi, .. } => quote!(<_ as crate::abi::cross::IntoAbi<#abi>>::into_abi(v)),
            RetKind::Vec(_) => quote!(::abi_stable::std_types::RVec::from(v)),
            RetKind::Option(_) => quote!(::abi_stable::std_types::ROption::from(v)),
        }
    }

    /// The ABI's value `v` into the client's.
    fn host_conversion(&self) -> Tokens {
        match self {
            RetKind::Unit | RetKind::Same(_) => quote!(v),
            RetKind::Declared { abi, client } => {
                quote!(<#client as crate::abi::cross::FromAbi<#abi>>::from_abi(v))
            }
            RetKind::Vec(_) => quote!(v.into_vec()),
            RetKind::Option(_) => quote!(v.into_option()),
        }
    }
}

/// One method, read from the plain trait.
struct Method {
    docs: Vec<Attribute>,
    name: Ident,
    abi_name: Ident,
    op: LitStr,
    mutable: bool,
    unsafety: Option<Token![unsafe]>,
    args: Vec<Arg>,
    fallible: bool,
    ret: RetKind,
    or_else: Option<Expr>,
    last: bool,
    trailing: Option<(LitStr, LitStr)>,
}

fn read_method(item: &mut TraitItemFn, after_last: bool) -> syn::Result<Method> {
    let abi = parse_method_abi(&item.attrs)?;
    item.attrs.retain(|a| !is_abi(a));
    let docs: Vec<Attribute> = item.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
    let sig = &mut item.sig;
    let name = sig.ident.clone();
    let mut mutable = false;
    let mut args = Vec::new();
    for input in sig.inputs.iter_mut() {
        match input {
            FnArg::Receiver(r) => mutable = r.mutability.is_some(),
            FnArg::Typed(typed) => {
                let declared =
                    typed.attrs.iter().find(|a| is_abi(a)).map(|a| a.parse_args::<Type>()).transpose()?;
                typed.attrs.retain(|a| !is_abi(a));
                let Pat::Ident(pat) = &*typed.pat else {
                    return Err(Error::new(typed.pat.span(), "an interface argument must be a plain name"));
                };
                let plain = (*typed.ty).clone();
                let kind = match declared {
                    Some(Type::Reference(r)) => ArgKind::Record((*r.elem).clone()),
                    Some(other) => {
                        return Err(Error::new(other.span(), "a declared argument type is `&Record`"))
                    }
                    None => match &plain {
                        Type::Reference(r) => match &*r.elem {
                            Type::Slice(s) => ArgKind::Slice((*s.elem).clone()),
                            _ => ArgKind::Same,
                        },
                        other => match generic_of(other, "Option") {
                            Some(inner) => ArgKind::Option(inner.clone()),
                            None => ArgKind::Same,
                        },
                    },
                };
                args.push(Arg { name: pat.ident.clone(), plain, kind });
            }
        }
    }
    let (fallible, inner) = match &sig.output {
        ReturnType::Default => (false, None),
        ReturnType::Type(_, ty) => match generic_of(ty, "Result") {
            Some(inner) => (true, Some(inner.clone())),
            None => (false, Some((**ty).clone())),
        },
    };
    let ret = match (abi.ret, inner) {
        (Some(abi_ty), inner) => {
            let client = abi.client.or(inner).unwrap_or_else(|| parse_quote!(()));
            RetKind::Declared { abi: Box::new(abi_ty), client: Box::new(client) }
        }
        (None, None) => RetKind::Unit,
        (None, Some(Type::Tuple(t))) if t.elems.is_empty() => RetKind::Unit,
        (None, Some(ty)) => match (generic_of(&ty, "Vec"), generic_of(&ty, "Option")) {
            (Some(elem), _) => RetKind::Vec(elem.clone()),
            (_, Some(inner)) => RetKind::Option(inner.clone()),
            _ => RetKind::Same(ty),
        },
    };
    let trailing = match (after_last, abi.since, abi.what) {
        (false, None, None) => None,
        (true, Some(since), Some(what)) => {
            if item.default.is_none() {
                return Err(Error::new(name.span(), "a method added after `last` needs a default body"));
            }
            Some((since, what))
        }
        (true, _, _) => {
            return Err(Error::new(name.span(), "a method after `last` needs `since` and `what`"))
        }
        (false, _, _) => {
            return Err(Error::new(name.span(), "`since` and `what` belong to methods after `last`"))
        }
    };
    Ok(Method {
        docs,
        abi_name: abi.name.unwrap_or_else(|| name.clone()),
        op: abi.op.unwrap_or_else(|| LitStr::new(&name.to_string(), name.span())),
        name,
        mutable,
        unsafety: sig.unsafety,
        args,
        fallible,
        ret,
        or_else: abi.or_else,
        last: abi.last,
        trailing,
    })
}

/// `#[interface(...)]` on a backend trait: see the crate documentation.
#[proc_macro_attribute]
pub fn interface(attr: TokenStream, item: TokenStream) -> TokenStream {
    let spec = match parse_interface(attr) {
        Ok(spec) => spec,
        Err(e) => return e.to_compile_error().into(),
    };
    let mut input = parse_macro_input!(item as ItemTrait);
    match expand(&spec, &mut input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(spec: &Interface, input: &mut ItemTrait) -> syn::Result<Tokens> {
    let mut methods = Vec::new();
    let mut after_last = false;
    for item in input.items.iter_mut() {
        if let TraitItem::Fn(f) = item {
            let method = read_method(f, after_last)?;
            after_last |= method.last;
            methods.push(method);
        }
    }
    if !after_last {
        return Err(Error::new(input.ident.span(), "one method must be marked `#[abi(last)]`"));
    }
    let backend = &input.ident;
    let (abi, boxed, client) = (&spec.abi, &spec.boxed, &spec.client);
    let abi_to = format_ident!("{}_TO", abi);
    let trait_docs: Vec<&Attribute> = input.attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
    let bounds = &spec.bounds;
    let lt = if spec.borrowed { quote!(<'a>) } else { quote!() };
    let box_lt = if spec.borrowed { quote!('a) } else { quote!('static) };
    let any_mut = methods.iter().any(|m| m.mutable);
    let deref = if any_mut { quote!(::core::ops::DerefMut) } else { quote!(::core::ops::Deref) };
    let holder_bounds = if spec.borrowed {
        quote!()
    } else if bounds.is_empty() {
        quote!(+ 'static)
    } else {
        quote!(+ #bounds + 'static)
    };

    let mut abi_methods = Vec::new();
    let mut adapter_methods = Vec::new();
    let mut client_methods = Vec::new();
    for m in &methods {
        let docs = &m.docs;
        let (name, abi_name, op) = (&m.name, &m.abi_name, &m.op);
        let recv = if m.mutable { quote!(&mut self) } else { quote!(&self) };
        let unsafety = &m.unsafety;
        let arg_names: Vec<&Ident> = m.args.iter().map(|a| &a.name).collect();
        let abi_types: Vec<Tokens> = m.args.iter().map(Arg::abi_type).collect();
        let plain_types: Vec<&Type> = m.args.iter().map(|a| &a.plain).collect();
        let abi_ret_inner = m.ret.abi_type();
        let abi_ret = if m.fallible {
            quote!(::abi_stable::std_types::RResult<#abi_ret_inner, crate::AccelError>)
        } else {
            abi_ret_inner.clone()
        };
        let sabi_attr = if m.last { quote!(#[sabi(last_prefix_field)]) } else { quote!() };
        let default = match &m.trailing {
            None => quote!(;),
            Some((since, what)) if m.fallible => {
                let message =
                    format!("{} needs a plugin of accel ABI {} or later", what.value(), since.value());
                quote!({
                    #(let _ = #arg_names;)*
                    ::abi_stable::std_types::RErr(crate::AccelError::unsupported(#message))
                })
            }
            Some(_) => quote!({
                #(let _ = #arg_names;)*
                ::core::default::Default::default()
            }),
        };
        abi_methods.push(quote! {
            #(#docs)*
            #sabi_attr
            #unsafety fn #abi_name(#recv, #(#arg_names: #abi_types),*) -> #abi_ret #default
        });

        // The adapter: the ABI's call into the backend, guarded.
        let (plugin_temps, plugin_pass): (Vec<Tokens>, Vec<Tokens>) =
            m.args.iter().map(Arg::plugin_pass).unzip();
        let this = if m.mutable { quote!(&mut *self.0) } else { quote!(&*self.0) };
        let call = quote!(<H::Target as #backend>::#name(#this, #(#plugin_pass),*));
        let call = if unsafety.is_some() {
            quote!({
                // SAFETY: the host's call carries the obligation of the backend's method, whose
                // `# Safety` section states it.
                unsafe { #call }
            })
        } else {
            call
        };
        let to_abi = m.ret.plugin_conversion();
        let body = if m.fallible {
            quote!(crate::glue::guard(#op, || {
                #(#plugin_temps)*
                #call.map(|v| #to_abi)
            }))
        } else {
            let or_else =
                m.or_else.clone().unwrap_or_else(|| parse_quote!(|_| ::core::default::Default::default()));
            quote!({
                let v = crate::glue::guard_or(#op, || #call, #or_else);
                #to_abi
            })
        };
        adapter_methods.push(quote! {
            #unsafety fn #abi_name(#recv, #(#arg_names: #abi_types),*) -> #abi_ret {
                #body
            }
        });

        // The client: the host's call in plain types.
        let (host_temps, host_pass): (Vec<Tokens>, Vec<Tokens>) = m.args.iter().map(Arg::host_pass).unzip();
        let client_ret_inner = m.ret.client_type();
        let from_abi = m.ret.host_conversion();
        let inner_call = quote!(self.inner.#abi_name(#(#host_pass),*));
        let inner_call = if unsafety.is_some() {
            quote!({
                // SAFETY: the caller upholds this method's `# Safety` section, which the ABI call
                // passes on.
                unsafe { #inner_call }
            })
        } else {
            inner_call
        };
        let (client_ret, client_body) = if m.fallible {
            (quote!(crate::Result<#client_ret_inner>), quote!(#inner_call.into_result().map(|v| #from_abi)))
        } else {
            (quote!(#client_ret_inner), quote!({ let v = #inner_call; #from_abi }))
        };
        client_methods.push(quote! {
            #(#docs)*
            pub #unsafety fn #abi_name(#recv, #(#arg_names: #plain_types),*) -> #client_ret {
                #(#host_temps)*
                #client_body
            }
        });
    }

    let box_doc = format!("A [`{abi}`] as it crosses the boundary.");
    let client_doc =
        format!("The host's handle on a plugin's [`{abi}`]; see [`{backend}`] for the contract.");
    let holder_impl = match &spec.holds {
        None => quote! {
            impl<T: #backend> crate::abi::cross::IntoAbi<#boxed> for T {
                fn into_abi(self) -> #boxed {
                    #abi_to::from_value(crate::glue::Guarded(crate::glue::Own(self)), ::abi_stable::sabi_trait::TD_Opaque)
                }
            }
        },
        Some(held) => quote! {
            impl #lt crate::abi::cross::IntoAbi<#boxed #lt> for #held {
                fn into_abi(self) -> #boxed #lt {
                    #abi_to::from_value(crate::glue::Guarded(self), ::abi_stable::sabi_trait::TD_Opaque)
                }
            }
        },
    };
    let abi_supertraits = if bounds.is_empty() { quote!() } else { quote!(: #bounds) };

    Ok(quote! {
        #input

        #(#trait_docs)*
        #[::abi_stable::sabi_trait]
        pub trait #abi #abi_supertraits {
            #(#abi_methods)*
        }

        #[doc = #box_doc]
        pub type #boxed #lt = #abi_to<#box_lt, ::abi_stable::std_types::RBox<()>>;

        impl<H> #abi for crate::glue::Guarded<H>
        where
            H: #deref #holder_bounds,
            H::Target: #backend,
        {
            #(#adapter_methods)*
        }

        #holder_impl

        #[doc = #client_doc]
        pub struct #client #lt {
            inner: #boxed #lt,
        }

        impl #lt #client #lt {
            /// Wraps the object a plugin returned.
            pub fn from_abi(inner: #boxed #lt) -> Self {
                Self { inner }
            }

            #(#client_methods)*
        }

        impl #lt crate::abi::cross::FromAbi<#boxed #lt> for #client #lt {
            fn from_abi(inner: #boxed #lt) -> Self {
                Self { inner }
            }
        }
    })
}
