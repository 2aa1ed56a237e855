//! `filter`: keeps the records for which a SQL condition is true.
//!
//! ```yaml
//! - filter: "temperature > 30 AND site IS NOT NULL"
//! ```
//!
//! A condition that is NULL drops the record, as SQL's `WHERE` does. A condition that fails
//! on a record (division by zero, a bad cast) sends it to the dead-letter topic with the
//! expression's error class and message.

use std::sync::Arc;

use super::{Kind, OpError, Operator, Planned, Record, StreamType};
use crate::expr::Expr;
use crate::types::Type;
use crate::Problem;

pub struct Filter;

impl Kind for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn summary(&self) -> &'static str {
        "keeps the records for which a SQL condition is true"
    }

    fn plan(
        &self,
        spec: &serde_yaml::Value,
        input: &StreamType,
    ) -> Result<Box<dyn Planned>, Vec<Problem>> {
        let Some(src) = spec.as_str() else {
            return Err(vec![Problem::new(
                "",
                "a filter is one SQL condition, as a string",
                "write e.g. `- filter: \"temperature > 30 AND site IS NOT NULL\"`",
            )]);
        };
        let expr = Expr::compile(src, &input.value)?;
        if !matches!(expr.ty().ty, Type::Boolean) {
            return Err(vec![Problem::new(
                "",
                format!("the condition `{src}` is a {}, not a boolean", expr.ty().ty),
                "compare it, e.g. `x > 0` or `x IS NOT NULL`",
            )]);
        }
        Ok(Box::new(FilterPlan {
            expr: Arc::new(expr),
            output: input.clone(),
        }))
    }

    fn output_despite_errors(&self, input: &StreamType) -> Option<StreamType> {
        Some(input.clone())
    }
}

#[derive(Debug)]
struct FilterPlan {
    expr: Arc<Expr>,
    output: StreamType,
}

impl Planned for FilterPlan {
    fn output(&self) -> &StreamType {
        &self.output
    }

    fn build(&self) -> Box<dyn Operator> {
        Box::new(FilterOp {
            expr: self.expr.clone(),
        })
    }
}

struct FilterOp {
    expr: Arc<Expr>,
}

impl Operator for FilterOp {
    fn process(&mut self, rec: Record, out: &mut Vec<Record>) -> Result<(), OpError> {
        match self.expr.eval_bool(&rec.value) {
            Ok(Some(true)) => out.push(rec),
            Ok(_) => {}
            Err(e) => return Err(OpError::reject(e.class(), e.to_string())),
        }
        Ok(())
    }
}
