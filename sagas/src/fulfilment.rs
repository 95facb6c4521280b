//! After checkout: what a recorded shipment or return does to stock and money.
//!
//! The order aggregate decides a shipment (`OrderShipped`) or a return (`ItemsReturned`);
//! settling it means taking the shipped units out of the order's reservations and capturing
//! their amount, or refunding a return and putting restocked units back on hand. Every step
//! is idempotent per shipment or return id (in the stock items, the Payment aggregate and at
//! the provider), so the request that recorded it, the saga worker that receives the event,
//! and a cancel's compensation may all settle the same shipment, in any order, on any engine,
//! and it is settled once.

use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
use emporium_domain::order::{Order, Return, Shipment};
use emporium_domain::payment::{Payment, PaymentCommand, PaymentError};
use emporium_domain::values::OrderId;
use emporium_event_store::{CommandError, EventMetadata};
use uuid::Uuid;

use crate::worker::{CheckoutSaga, SagaError};

fn command_error<E: std::error::Error>(e: CommandError<E>) -> SagaError {
    SagaError::Command(e.to_string())
}

impl CheckoutSaga {
    /// Settles shipment `shipment_id` of order `order_id`.
    pub async fn settle_shipment(
        &self,
        order_id: &OrderId,
        shipment_id: Uuid,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let oid = order_id.to_string();
        let (order, _) = self.store().load::<Order>(&oid).await?;
        match order
            .shipments()
            .iter()
            .find(|s| s.shipment_id == shipment_id)
        {
            Some(s) => self.settle_one_shipment(*order_id, s, meta).await,
            None => Ok(()),
        }
    }

    /// Settles return `return_id` of order `order_id`.
    pub async fn settle_return(
        &self,
        order_id: &OrderId,
        return_id: Uuid,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let oid = order_id.to_string();
        let (order, _) = self.store().load::<Order>(&oid).await?;
        match order.returns().iter().find(|r| r.return_id == return_id) {
            Some(r) => self.settle_one_return(*order_id, r, meta).await,
            None => Ok(()),
        }
    }

    /// Settles every shipment and return of `order` (idempotent): a cancel runs this before
    /// it releases what is left, so a shipment recorded but not yet settled keeps its units.
    pub async fn settle_fulfilment(
        &self,
        order: &Order,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let Some(order_id) = order.order_id() else {
            return Ok(());
        };
        for s in order.shipments() {
            self.settle_one_shipment(order_id, s, meta).await?;
        }
        for r in order.returns() {
            self.settle_one_return(order_id, r, meta).await?;
        }
        Ok(())
    }

    async fn settle_one_shipment(
        &self,
        order_id: OrderId,
        s: &Shipment,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let oid = order_id.to_string();
        for line in &s.lines {
            self.store()
                .execute::<StockItem>(
                    &stock_item_id(&s.warehouse_id, &line.sku),
                    StockItemCommand::ShipReserved {
                        order_id,
                        shipment_id: s.shipment_id,
                        qty: line.qty,
                    },
                    meta,
                )
                .await
                .map_err(command_error)?;
        }
        if s.amount.is_zero() {
            return Ok(());
        }
        let reference = s.shipment_id.to_string();
        self.provider()
            .capture(
                &oid,
                &format!("{oid}:capture:{reference}"),
                s.amount.amount_minor(),
                s.amount.currency().as_str(),
            )
            .await
            .map_err(|e| SagaError::Command(e.to_string()))?;
        self.store()
            .execute::<Payment>(
                &oid,
                PaymentCommand::CapturePayment {
                    amount: s.amount,
                    reference: Some(reference),
                },
                meta,
            )
            .await
            .map_err(command_error)
    }

    async fn settle_one_return(
        &self,
        order_id: OrderId,
        r: &Return,
        meta: &EventMetadata,
    ) -> Result<(), SagaError> {
        let oid = order_id.to_string();
        for line in r.lines.iter().filter(|l| l.restock) {
            self.store()
                .execute::<StockItem>(
                    &stock_item_id(&line.warehouse_id, &line.sku),
                    StockItemCommand::RestockReturn {
                        warehouse_id: line.warehouse_id.clone(),
                        sku: line.sku.clone(),
                        order_id,
                        return_id: r.return_id,
                        qty: line.qty,
                    },
                    meta,
                )
                .await
                .map_err(command_error)?;
        }
        if r.amount.is_zero() {
            return Ok(());
        }
        let reference = r.return_id.to_string();
        self.provider()
            .refund(
                &oid,
                &format!("{oid}:refund:{reference}"),
                r.amount.amount_minor(),
                r.amount.currency().as_str(),
            )
            .await
            .map_err(|e| SagaError::Command(e.to_string()))?;
        match self
            .store()
            .execute::<Payment>(
                &oid,
                PaymentCommand::RefundPayment {
                    amount: r.amount,
                    reference: Some(reference),
                },
                meta,
            )
            .await
        {
            // A return is only accepted for shipped units, whose capture is settled before
            // (shipments are settled first): anything else is a real failure.
            Err(CommandError::Rejected(e @ PaymentError::RefundExceedsCaptured { .. })) => {
                Err(SagaError::Command(e.to_string()))
            }
            other => other.map_err(command_error),
        }
    }
}
