/** A labelled <select> (the filters of every view). `any` adds a first option with the empty value. */
export function Select(props: {
  label: string;
  name?: string;
  value: string;
  options: ReadonlyArray<string | { value: string; label: string }>;
  any?: string;
  onChange: (value: string) => void;
}) {
  return (
    <label>
      {props.label}
      <select name={props.name} value={props.value} onChange={(e) => props.onChange((e.currentTarget as HTMLSelectElement).value)}>
        {props.any !== undefined && <option value="">{props.any}</option>}
        {props.options.map((o) => {
          const { value, label } = typeof o === 'string' ? { value: o, label: o } : o;
          return (
            <option key={value} value={value}>
              {label}
            </option>
          );
        })}
      </select>
    </label>
  );
}
