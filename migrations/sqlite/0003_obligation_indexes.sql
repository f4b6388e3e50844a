-- Obligations are looked up by the extract they are for (each energy
-- acknowledgement), by kind and quarter (each quarterly report: is the
-- quarter's FINANCE_FORM obligation made yet?) and by filing (GetDelivery).
-- Without these indexes each of those scanned the whole table.
CREATE INDEX obligations_by_extract ON obligations (extract_id);
CREATE INDEX obligations_by_quarter ON obligations (kind, year, quarter);
CREATE INDEX obligations_by_filing ON obligations (filing_id);
