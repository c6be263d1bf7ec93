-- The first rows of a table in the given order, for previews and the CLI summary.
select {columns} from {target} order by {order_column} desc limit :limit
