select status from categories where id = :category_id
