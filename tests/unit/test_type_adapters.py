"""quart-schema's conversion uses one kept pydantic TypeAdapter per type, with the same results."""

from __future__ import annotations

from typing import Annotated

import pytest
import quart_schema.conversion
from pydantic import BaseModel, ConfigDict, ValidationError

from roost.http import type_adapters


class Thing(BaseModel):
    name: str
    count: int


def test_install_makes_quart_schema_reuse_one_adapter_per_type() -> None:
    type_adapters.install()
    assert quart_schema.conversion.TypeAdapter is type_adapters.adapter_for
    assert type_adapters.adapter_for(dict) is type_adapters.adapter_for(dict)
    assert type_adapters.adapter_for(Thing) is type_adapters.adapter_for(Thing)
    assert type_adapters.adapter_for(list[Thing]) is type_adapters.adapter_for(list[Thing])


def test_kept_adapters_validate_and_dump_as_fresh_ones() -> None:
    type_adapters.install()
    thing = quart_schema.conversion.model_load({"name": "a", "count": "3"}, Thing, ValueError)
    assert thing == Thing(name="a", count=3)
    assert quart_schema.conversion.model_dump({"thing": thing, "n": 1}) == {"thing": {"name": "a", "count": 3}, "n": 1}


def test_a_kept_adapter_still_refuses_bad_input_each_time() -> None:
    type_adapters.install()
    for _ in range(2):  # the second call uses the kept adapter
        with pytest.raises(ValueError) as caught:
            quart_schema.conversion.model_load({"name": "a", "count": "many"}, Thing, ValueError)
        assert isinstance(caught.value.args[0], ValidationError)


def test_options_or_unhashable_types_get_a_fresh_adapter() -> None:
    assert type_adapters.adapter_for(int, config=None) is not type_adapters.adapter_for(int, config=None)
    assert type_adapters.adapter_for(dict, config=ConfigDict()) is not type_adapters.adapter_for(dict)
    unhashable = Annotated[int, {"note": "a dict in the metadata"}]
    first, second = type_adapters.adapter_for(unhashable), type_adapters.adapter_for(unhashable)
    assert first is not second
    assert first.validate_python("3") == 3
