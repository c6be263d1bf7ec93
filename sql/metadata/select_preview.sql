-- The most recently synced rows, for the preview in the Dagster UI.
select {columns} from {target} order by {order_column} desc limit 5
