//! The SQL catalog (SQLite) and the mapping of rill's columns to Iceberg
//! types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use iceberg::spec::{ListType, NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use rill_core::node::{ConfigError, NodeError};
use rill_nodes::files::columnar::{ColType, Column, Columns};
use serde::Deserialize;

/// Beam's `catalog_properties`, for a SQL catalog on SQLite.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CatalogProps {
    /// `sql` (the only kind here; Beam's `jdbc` is taken as it).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The SQLite file of the catalog (`iceberg/catalog.db`), or a
    /// `sqlite:` URI.
    pub uri: Option<String>,
    /// The warehouse folder (`iceberg/warehouse`), or a `file://` URI.
    pub warehouse: Option<String>,
}

/// A resolved catalog: absolute paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CatalogAt {
    pub(crate) name: String,
    pub(crate) db: PathBuf,
    pub(crate) warehouse: PathBuf,
}

impl CatalogProps {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.kind.as_deref() {
            None | Some("sql") | Some("jdbc") => Ok(()),
            Some(other) => Err(ConfigError::at_path(
                ["catalog_properties", "type"],
                format!(
                    "catalogs of type `{other}` are not built in: rill runs a SQL catalog on SQLite (`type: sql`), with the warehouse on the local filesystem"
                ),
            )),
        }?;
        if let Some(w) = &self.warehouse
            && w.contains("://")
            && !w.starts_with("file://")
        {
            return Err(ConfigError::at_path(
                ["catalog_properties", "warehouse"],
                "the warehouse is a local folder (or a file:// URI)",
            ));
        }
        Ok(())
    }

    pub(crate) fn resolve(&self, name: &str, base: &Path) -> CatalogAt {
        let path = |s: &str| {
            let p = PathBuf::from(s);
            if p.is_absolute() { p } else { base.join(p) }
        };
        let db = match self.uri.as_deref() {
            None => path("iceberg/catalog.db"),
            Some(u) => {
                let bare = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .unwrap_or(u);
                path(bare.split('?').next().unwrap_or(bare))
            }
        };
        let warehouse = match self.warehouse.as_deref() {
            None => path("iceberg/warehouse"),
            Some(w) => path(w.strip_prefix("file://").unwrap_or(w)),
        };
        CatalogAt {
            name: name.to_owned(),
            db,
            warehouse,
        }
    }
}

/// `namespace.table`.
pub(crate) fn table_ident(table: &str) -> Result<TableIdent, String> {
    let (ns, name) = table
        .rsplit_once('.')
        .ok_or_else(|| format!("`{table}` is not `namespace.table` (e.g. `rill.events`)"))?;
    if ns.is_empty() || name.is_empty() || ns.contains('.') {
        return Err(format!(
            "`{table}`: give one namespace and a table name, `namespace.table`"
        ));
    }
    Ok(TableIdent::new(
        NamespaceIdent::new(ns.to_owned()),
        name.to_owned(),
    ))
}

fn catalogs() -> &'static Mutex<HashMap<CatalogAt, Arc<SqlCatalog>>> {
    static C: std::sync::OnceLock<Mutex<HashMap<CatalogAt, Arc<SqlCatalog>>>> =
        std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

/// The catalog (one per database in a process: a single writer on SQLite).
pub(crate) fn open(at: &CatalogAt) -> Result<Arc<SqlCatalog>, NodeError> {
    if let Some(c) = catalogs().lock().unwrap().get(at) {
        return Ok(c.clone());
    }
    for dir in [at.db.parent(), Some(at.warehouse.as_path())]
        .into_iter()
        .flatten()
    {
        rill_core::perms::create_shared_dirs(dir).map_err(|e| NodeError::io(dir, e))?;
    }
    let props = HashMap::from([
        (
            iceberg_catalog_sql::SQL_CATALOG_PROP_URI.to_owned(),
            format!("sqlite://{}?mode=rwc", at.db.display()),
        ),
        (
            iceberg_catalog_sql::SQL_CATALOG_PROP_WAREHOUSE.to_owned(),
            at.warehouse.display().to_string(),
        ),
        (
            iceberg_catalog_sql::SQL_CATALOG_PROP_BIND_STYLE.to_owned(),
            SqlBindStyle::QMark.to_string(),
        ),
        ("pool.max-connections".to_owned(), "1".to_owned()),
    ]);
    let name = at.name.clone();
    let c = crate::rt::block(async move {
        SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(iceberg::io::LocalFsStorageFactory))
            .load(name, props)
            .await
    })
    .map_err(|e| {
        NodeError::failed(format!(
            "cannot open the Iceberg catalog {}: {e}",
            at.db.display()
        ))
    })?;
    let c = Arc::new(c);
    catalogs().lock().unwrap().insert(at.clone(), c.clone());
    Ok(c)
}

/// Creates the namespace if it is not there.
pub(crate) async fn ensure_namespace(c: &SqlCatalog, ns: &NamespaceIdent) -> iceberg::Result<()> {
    if !c.namespace_exists(ns).await? {
        c.create_namespace(ns, HashMap::new()).await?;
    }
    Ok(())
}

/// The Iceberg type of a column.
pub(crate) fn iceberg_type(t: &ColType) -> Type {
    match t {
        ColType::Bool => Type::Primitive(PrimitiveType::Boolean),
        ColType::Int => Type::Primitive(PrimitiveType::Long),
        ColType::Float => Type::Primitive(PrimitiveType::Double),
        ColType::String | ColType::Json | ColType::Other(_) => {
            Type::Primitive(PrimitiveType::String)
        }
        ColType::Bytes => Type::Primitive(PrimitiveType::Binary),
        // the element's id is assigned when the table takes the schema
        ColType::List(inner) => Type::List(ListType::new(Arc::new(NestedField::list_element(
            0,
            iceberg_type(inner),
            false,
        )))),
    }
}

/// A table's schema for the columns (ids are assigned by the table).
pub(crate) fn schema_of(cols: &Columns) -> Result<Schema, String> {
    let fields = cols
        .cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Arc::new(NestedField::optional(
                i as i32 + 1,
                c.name.as_str(),
                iceberg_type(c.ty.as_ref().unwrap_or(&ColType::Json)),
            ))
        })
        .collect::<Vec<_>>();
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(|e| e.to_string())
}

/// The column type records must have to fit an Iceberg type (`None`: a
/// type rill does not write).
pub(crate) fn col_type(t: &Type) -> Option<ColType> {
    Some(match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => ColType::Bool,
            PrimitiveType::Int
            | PrimitiveType::Long
            | PrimitiveType::Date
            | PrimitiveType::Timestamp
            | PrimitiveType::Timestamptz
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs => ColType::Int,
            PrimitiveType::Float | PrimitiveType::Double => ColType::Float,
            PrimitiveType::String => ColType::String,
            PrimitiveType::Binary | PrimitiveType::Fixed(_) => ColType::Bytes,
            _ => return None,
        },
        Type::List(l) => ColType::List(Box::new(col_type(&l.element_field.field_type)?)),
        _ => return None,
    })
}

/// The columns of an existing table, as records must fit them.
pub(crate) fn columns_of(schema: &Schema) -> Columns {
    Columns {
        cols: schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name.as_str().into(),
                ty: Some(
                    col_type(&f.field_type)
                        .unwrap_or_else(|| ColType::Other(f.field_type.to_string())),
                ),
            })
            .collect(),
        declared: true,
        from_table: true,
    }
}
